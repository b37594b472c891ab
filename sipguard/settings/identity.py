"""The settings of signed identity headers (issue 16), as frozen values.

Owns: `IdentitySettings`, `SigningKey`, and their defaults (`DEFAULT_HEADER_PREFIX`,
`DEFAULT_STRIP_INBOUND`). `sipguard.settings` re-exports each, so every layer imports them
from there.

Never does: read a key file (`sipguard.config.identity` does), sign or verify
(`sipguard.identity`), put a key in a repr. Stdlib dataclasses only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The header prefix of what sipguard attaches: X-Sipguard-Trunk, X-Sipguard-Attr-Org-Id...
DEFAULT_HEADER_PREFIX = "X-Sipguard-"
# Identity headers a caller sets to be believed by the platform (RFC 3325, RFC 7239's cousins,
# draft-ietf-sip-privacy-04): stripped from requests from outside by default.
DEFAULT_STRIP_INBOUND: tuple[str, ...] = (
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "X-Forwarded-For",
    "Remote-Party-ID",
)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One identity signing key (HMAC-SHA-256): `id` names it in the signature header."""

    id: str
    secret: bytes = field(repr=False, hash=False)
    # Where the key came from, e.g. "file:/etc/sipguard/identity-k2.key"; never the key itself.
    source: str = "given"

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError(f"signing key {self.id!r}: empty secret")


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """Signed identity headers on the way out, stripped copies on the way in (issue 16)."""

    signing_keys: tuple[SigningKey, ...]  # newest first: the first signs, all verify
    header_prefix: str = DEFAULT_HEADER_PREFIX
    # Seconds a signature stays valid for the verifier: covers the platform's clock skew and
    # queueing, short enough that a captured request cannot be replayed much later.
    max_age: int = 30
    strip_inbound: tuple[str, ...] = DEFAULT_STRIP_INBOUND

    def __post_init__(self) -> None:
        if not self.signing_keys:
            raise ValueError("identity: at least one signing key")
        ids = [k.id for k in self.signing_keys]
        if len(set(ids)) != len(ids):
            raise ValueError("identity: signing key ids must be unique")
        if self.max_age <= 0:
            raise ValueError("identity: max_age must be positive")
