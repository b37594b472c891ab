"""policy layer of sipguard."""
