"""sipguard: a SIP edge authentication proxy (IP whitelist and digest auth before a platform)."""

from __future__ import annotations

__version__ = "0.1.0"
