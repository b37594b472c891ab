"""transport layer of sipguard."""
