"""Stateless signed nonces, the opaque value, and bounded nonce-count tracking (sans-IO).

Owns: the nonce format and its check (`NonceIssuer`), the constant `opaque` per realm, and the
nonce-count replay table (`NonceTracker`).

Never does: read a clock, draw randomness, log, or keep state per challenge. Time (`now`, in
seconds), the key and the uniqueness value are passed in, so issuing a challenge costs no
memory (SECURITY-CASES 24, 33); only nonces that came back with a correct answer are tracked.

Nonce format (RFC 7616 §3.3 leaves it to the server; RFC 3261 §22.4):
    base64url, no padding, of  expiry (8 bytes, big-endian milliseconds since the epoch)
                             | unique (8 bytes, given by the caller: boot id + counter)
                             | HMAC-SHA-256(key, "sipguard-nonce-v1" | expiry | unique
                                            | len(realm) | realm | source_ip)[:16]
43 characters from [A-Za-z0-9_-], so it never needs escaping in a quoted-string. The MAC binds
the nonce to the realm and the source IP it was issued to (SECURITY-CASES 24); the expiry is
readable without the key (`expires_at`) so the tracker needs no clock of its own. The source IP
is compared as the caller spells it: pass the same canonical form at issue and check.

Opaque (RFC 7616 §3.3): `opaque = hex(HMAC-SHA-256(key, "sipguard-opaque-v1" | realm))[:32]`.
It is constant per key and realm on purpose: every instance sharing the key and every restart
produce the same value, it carries no state, and the nonce already carries (and signs) all
the state we need. A client that does not echo it back can be told apart (`check_opaque`).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = [
    "NONCE_LENGTH",
    "NonceIssuer",
    "NonceTracker",
    "NonceVerdict",
    "expires_at",
]

_NONCE_TAG: Final = b"sipguard-nonce-v1"
_OPAQUE_TAG: Final = b"sipguard-opaque-v1"
_UNIQUE_SIZE: Final = 8
_MAC_SIZE: Final = 16  # 128 bits: forging one nonce takes 2**128 guesses
_RAW_SIZE: Final = 8 + _UNIQUE_SIZE + _MAC_SIZE
NONCE_LENGTH: Final = 43  # base64 of 32 bytes without padding
_NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
# The base64url characters whose 6 bits end in two zero bits: the last of a canonical nonce.
_CANONICAL_LAST: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[::4]
)
_FROM_URLSAFE: Final = str.maketrans("-_", "+/")
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
# A key shorter than this is a configuration mistake (RFC 2104 §3: at least the output length
# of the hash is recommended; 16 bytes is the floor we accept).
MIN_KEY_SIZE: Final = 16


class NonceVerdict(Enum):
    VALID = "valid"
    STALE = "stale"  # signed by us for this realm and source, but expired (RFC 7616 §3.3)
    INVALID = "invalid"  # not ours: bad format, another key, realm or source address


def _decode(nonce: str) -> bytes | None:
    """The 32 raw bytes of a well-formed nonce, or None. Never raises."""
    if len(nonce) != NONCE_LENGTH or _NONCE_RE.fullmatch(nonce) is None:
        return None
    # 43 characters carry 258 bits: two spellings decode to the same bytes unless the last
    # character is canonical (its 2 low bits, beyond the 32 bytes, are zero, as `_encode`
    # writes them); refuse the alias so one nonce has one spelling (tracker key).
    if nonce[-1] not in _CANONICAL_LAST:
        return None
    try:
        return binascii.a2b_base64(nonce.translate(_FROM_URLSAFE) + "=")
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern already excludes it
        return None


def _encode(raw: bytes) -> bytes:
    """base64url without padding of 32 raw bytes (43 ASCII characters)."""
    return binascii.b2a_base64(raw, newline=False)[:-1].translate(_TO_URLSAFE)


def expires_at(nonce: str) -> float | None:
    """The expiry time (seconds) written in a well-formed nonce, or None. Not authenticated:
    call it only on a nonce `NonceIssuer.check` found VALID or STALE."""
    raw = _decode(nonce)
    if raw is None:
        return None
    return int.from_bytes(raw[:8], "big") / 1000


class NonceIssuer:
    """Issues and checks nonces under one key (shared by every instance, DESIGN §6)."""

    __slots__ = ("_key", "_opaques", "_realms")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_SIZE:
            raise ValueError(f"the nonce key must be at least {MIN_KEY_SIZE} bytes")
        self._key = key
        # realm -> opaque (ASCII): realms come from the config, so this stays small.
        self._opaques: dict[str, bytes] = {}
        # realm -> its length-prefixed UTF-8 form, as the nonce MAC covers it
        self._realms: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "NonceIssuer(key=<hidden>)"

    def _mac(self, head: bytes, realm: str, source_ip: str) -> bytes:
        # Length-prefix the realm so that (realm, source) pairs cannot be re-split; the prefixed
        # realm is built once per realm (realms come from the config).
        prefixed = self._realms.get(realm)
        if prefixed is None:
            if len(self._realms) >= 64:  # a caller passing arbitrary realms: stay bounded
                self._realms.clear()
            realm_b = realm.encode("utf-8", "surrogatepass")
            prefixed = self._realms[realm] = len(realm_b).to_bytes(4, "big") + realm_b
        msg = b"".join((_NONCE_TAG, head, prefixed, source_ip.encode("utf-8", "surrogatepass")))
        return hmac.digest(self._key, msg, "sha256")[:_MAC_SIZE]

    def issue(self, realm: str, source_ip: str, now: float, ttl: int, unique: bytes) -> str:
        """A nonce for `realm` and `source_ip` that is VALID until `now + ttl`.

        `unique` makes two nonces issued in the same millisecond differ (the core passes a
        per-process boot id and a counter). Exactly 8 bytes are used as they are; any other
        length is folded to 8 with BLAKE2b."""
        return self.issue_bytes(realm, source_ip, now, ttl, unique).decode("ascii")

    def issue_bytes(self, realm: str, source_ip: str, now: float, ttl: int, unique: bytes) -> bytes:
        """`issue`, as the ASCII bytes a challenge carries."""
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if len(unique) != _UNIQUE_SIZE:
            unique = hashlib.blake2b(unique, digest_size=_UNIQUE_SIZE).digest()
        head = (math.floor(now * 1000) + ttl * 1000).to_bytes(8, "big") + unique
        return _encode(head + self._mac(head, realm, source_ip))

    def check(self, nonce: str, realm: str, source_ip: str, now: float) -> NonceVerdict:
        """VALID, STALE (ours, expired: `now >= expiry`) or INVALID. Never raises."""
        return self.check_with_expiry(nonce, realm, source_ip, now)[0]

    def check_with_expiry(
        self, nonce: str, realm: str, source_ip: str, now: float
    ) -> tuple[NonceVerdict, float | None]:
        """`check`, and the nonce's expiry (seconds, as `expires_at` reads it) when the verdict
        is VALID or STALE (None when INVALID): one decode per answer instead of two."""
        try:
            raw = _decode(nonce)
            if raw is None:
                return NonceVerdict.INVALID, None
            head, mac = raw[: 8 + _UNIQUE_SIZE], raw[8 + _UNIQUE_SIZE :]
            if not hmac.compare_digest(mac, self._mac(head, realm, source_ip)):
                return NonceVerdict.INVALID, None
            expiry_ms = int.from_bytes(head[:8], "big")
            # `not <` so that a NaN clock fails closed (STALE) instead of VALID.
            if not now * 1000 < expiry_ms:
                return NonceVerdict.STALE, expiry_ms / 1000
            return NonceVerdict.VALID, expiry_ms / 1000
        except (TypeError, ValueError, AttributeError):
            # A non-str from a buggy caller, NaN clock...: never an exception from a peer's nonce.
            return NonceVerdict.INVALID, None

    def expires_at(self, nonce: str) -> float | None:
        """See the module-level `expires_at`."""
        return expires_at(nonce)

    def opaque(self, realm: str) -> str:
        """The opaque value for `realm`: 32 hex digits, constant per key and realm."""
        msg = _OPAQUE_TAG + realm.encode("utf-8", "surrogatepass")
        return hmac.digest(self._key, msg, hashlib.sha256)[:16].hex()

    def check_opaque(self, opaque: str, realm: str) -> bool:
        """True when `opaque` is the one we send for `realm` (constant-time)."""
        expected = self._opaques.get(realm)
        if expected is None:
            if len(self._opaques) >= 64:  # a caller passing arbitrary realms: stay bounded
                self._opaques.clear()
            expected = self._opaques[realm] = self.opaque(realm).encode("ascii")
        return hmac.compare_digest(opaque.encode("utf-8", "surrogatepass"), expected)


@dataclass(slots=True)
class _Seen:
    expires_at: float
    last_nc: int  # the highest nonce-count accepted; 0 after `kill` of an unseen nonce
    dead: bool = False


class NonceTracker:
    """Nonce-count replay protection with bounded memory (RFC 7616 §3.4.5, RFC 2617 §3.2.3).

    Tracks only nonces whose signature was good (the caller checks first). Each entry lives as
    long as its nonce; at most `max_entries` are kept. When the table is full, expired entries
    at the old end go first, then the oldest live one; evicting a live entry raises `horizon`
    to its expiry, and an UNKNOWN nonce that expires at or before the horizon is refused. So
    eviction can only make a client re-authenticate (fail closed), never re-open a replay.

    `horizon` at construction: pass `boot_time + nonce_ttl` so that nonces issued before this
    process started, whose counts were lost with the old process, are refused
    (SECURITY-CASES 24: "a nonce from before a restart").

    Insertion order approximates expiry order because every nonce gets the same ttl; each entry
    is inserted and removed once, so `accept` and `kill` are O(1) amortised.
    """

    __slots__ = ("_entries", "_max", "horizon")

    def __init__(self, max_entries: int, *, horizon: float = -math.inf) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._entries: OrderedDict[str, _Seen] = OrderedDict()
        self.horizon = horizon

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.expires_at > now:
                return
            entries.popitem(last=False)

    def _insert(self, nonce: str, seen: _Seen, now: float) -> None:
        self._purge(now)
        while len(self._entries) >= self._max:
            _, evicted = self._entries.popitem(last=False)
            self.horizon = max(self.horizon, evicted.expires_at)
        self._entries[nonce] = seen

    def accept(self, nonce: str, nc: int, expires_at: float, now: float) -> bool:
        """True once per (nonce, strictly increasing nc); False for nc <= 0, a replayed or
        decreasing nc, an expired or killed nonce, or an unknown nonce at or below the
        horizon. Records the accepted count."""
        if nc <= 0 or not now < expires_at:  # `not <`: a NaN clock fails closed
            return False
        seen = self._entries.get(nonce)
        if seen is None:
            if expires_at <= self.horizon:
                return False
            self._insert(nonce, _Seen(expires_at, nc), now)
            return True
        if seen.dead or nc <= seen.last_nc:
            return False
        seen.last_nc = nc
        return True

    def kill(self, nonce: str, expires_at: float, now: float | None = None) -> None:
        """Refuse every later use of `nonce` (after one wrong answer: a password cracker
        reuses one nonce for many guesses). `now` only helps purge expired entries."""
        seen = self._entries.get(nonce)
        if seen is not None:
            seen.dead = True
            return
        self._insert(nonce, _Seen(expires_at, 0, dead=True), -math.inf if now is None else now)
