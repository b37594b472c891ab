"""auth layer of sipguard."""
