"""Digest authentication building blocks (sans-IO): digest math, signed nonces, HA1 lookup.

Owns nothing of its own; re-exports the public API of `digest`, `answer`, `nonce` and `credentials`.
Never reads clocks, randomness, sockets or files: `now`, keys and uniqueness values are passed
in (DESIGN §2). RFC 3261 §22, RFC 7616, RFC 8760, RFC 2617.
"""

from __future__ import annotations

from sipguard.auth.answer import DigestAnswer, MalformedAnswer, verify
from sipguard.auth.credentials import CredentialStore, Entry
from sipguard.auth.digest import (
    ALGORITHMS,
    BASE_ALGORITHMS,
    build_challenge,
    build_challenges,
    compute_ha1,
    compute_response,
)
from sipguard.auth.nonce import NonceIssuer, NonceTracker, NonceVerdict, expires_at

__all__ = [
    "ALGORITHMS",
    "BASE_ALGORITHMS",
    "CredentialStore",
    "DigestAnswer",
    "Entry",
    "MalformedAnswer",
    "NonceIssuer",
    "NonceTracker",
    "NonceVerdict",
    "build_challenge",
    "build_challenges",
    "compute_ha1",
    "compute_response",
    "expires_at",
    "verify",
]
