"""sip layer of sipguard."""
