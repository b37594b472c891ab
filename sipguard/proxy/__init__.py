"""proxy layer of sipguard."""
