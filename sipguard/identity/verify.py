"""Checking a signed identity, as the platform does it (sans-IO).

Owns: `Outcome` (every way a check ends) and `verify`, which rebuilds the canonical form from a
request's header fields, recomputes the HMAC with the key the signature names and checks the
timestamp against `max_age`; `verify_message` does the same for the bytes of a whole message.
The platform can call these, or port them: the canonical form is documented in
`sipguard.identity.headers` and in the README.

Never does: read the clock or files (`now` and the keys are passed in), log, raise on peer
input. Keys are compared by id; MACs with `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from enum import Enum

from sipguard.errors import ParseError
from sipguard.identity.headers import HeaderNames, canonical, parse_signature
from sipguard.settings import DEFAULT_HEADER_PREFIX, SigningKey
from sipguard.sip import canonical_key, parse_message
from sipguard.sip.values import parse_cseq, parse_name_addr

__all__ = ["Outcome", "verify", "verify_message"]

_REQUIRED = (b"call-id", b"cseq", b"from")


class Outcome(Enum):
    """How a check ended; the value is the reason given to a person."""

    VALID = "valid"
    UNREADABLE = "not a readable SIP message"
    NO_SIGNATURE = "no signature header"
    MALFORMED = "malformed or repeated signature header"
    INCOMPLETE = "a covered header is missing, repeated or unreadable"
    UNKNOWN_KEY = "signed with an unknown key id"
    BAD_MAC = "the signature does not match the headers"
    EXPIRED = "the signature is older than max_age"
    FUTURE = "the signature's timestamp is more than max_age ahead"


def _raw(text: str | bytes) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else text


def verify(
    headers: Iterable[tuple[str | bytes, str | bytes]],
    keys: Sequence[SigningKey],
    now: float,
    max_age: float,
    *,
    prefix: str = DEFAULT_HEADER_PREFIX,
) -> Outcome:
    """Check the signature of a request given its header fields as (name, value) pairs in
    message order (values unfolded; str values are taken as UTF-8). `keys` are every key the
    verifier accepts (during a rotation, the new and the old); `now` the wall clock in seconds
    since the epoch. Every header with the prefix is covered: one added, removed, repeated or
    changed after signing makes the check fail."""
    names = HeaderNames.of(prefix)
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        key = canonical_key(_raw(name).strip(b" \t"))
        found.setdefault(key, []).append(_raw(value).strip(b" \t"))
    signatures = found.pop(names.signature.lower(), [])
    if not signatures:
        return Outcome.NO_SIGNATURE
    signature = parse_signature(signatures[0]) if len(signatures) == 1 else None
    if signature is None:
        return Outcome.MALFORMED
    secret = next((k.secret for k in keys if k.id.encode("ascii") == signature.key_id), None)
    if secret is None:
        return Outcome.UNKNOWN_KEY
    form = _form(found, names, signature.key_id, signature.timestamp)
    if form is None:
        return Outcome.INCOMPLETE
    mac = hmac.digest(secret, form, "sha256").hex().encode("ascii")
    if not hmac.compare_digest(mac, signature.mac):
        return Outcome.BAD_MAC
    age = now - signature.timestamp
    if age > max_age:
        return Outcome.EXPIRED
    if -age > max_age:
        return Outcome.FUTURE
    return Outcome.VALID


def _form(
    found: dict[bytes, list[bytes]], names: HeaderNames, key_id: bytes, timestamp: int
) -> bytes | None:
    """The canonical form of the headers `found` (lowercase key -> values), or None when a
    covered header is missing, repeated or unreadable."""
    for key, values in found.items():
        # Call-ID, CSeq, From and every prefix header exactly once; others may repeat (Via...).
        if len(values) > 1 and (key in _REQUIRED or key.startswith(names.prefix_key)):
            return None
    fixed = [names.source.lower(), names.trunk.lower(), names.auth.lower()]
    if any(k not in found for k in (*_REQUIRED, *fixed)):
        return None
    try:
        cseq = parse_cseq(found[b"cseq"][0])
        from_tag = parse_name_addr(found[b"from"][0]).tag or b""
    except ParseError:
        return None
    user = names.user.lower()
    order = [fixed[0], *([user] if user in found else []), *fixed[1:]]
    others = sorted(
        k for k in found if k.startswith(names.prefix_key) and k not in order and k != user
    )
    covered = [(k, found[k][0]) for k in (*order, *others)]
    return canonical(key_id, timestamp, found[b"call-id"][0], cseq, from_tag, covered)


def verify_message(
    raw: bytes,
    keys: Sequence[SigningKey],
    now: float,
    max_age: float,
    *,
    prefix: str = DEFAULT_HEADER_PREFIX,
) -> Outcome:
    """`verify` for the bytes of one SIP request (as received by the platform)."""
    try:
        msg = parse_message(raw)
    except ParseError:
        return Outcome.UNREADABLE
    return verify(((h.name, h.value) for h in msg.headers), keys, now, max_age, prefix=prefix)
