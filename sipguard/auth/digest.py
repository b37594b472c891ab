"""Digest access authentication math and the challenge values (sans-IO).

Owns: the hash functions of each algorithm and their names (canonical spelling, `-sess`, digest
length), HA1/response computation, and the text of `WWW-Authenticate`/`Proxy-Authenticate`
challenge values. The validation of a client's answer and its constant-time verification are
`sipguard.auth.answer`.

Never does: parse SIP messages or header syntax, look up users, check nonces, read clocks or
log. No secret (password, HA1, response) ever appears in an exception message or a repr.

Implements:
- RFC 3261 §22.4 (Digest in SIP, RFC 2069 compatibility when `qop` is absent),
- RFC 2617 §3.2.2 (request-digest with and without qop, MD5-sess A1),
- RFC 7616 §3.4 (SHA-256, SHA-512-256, `-sess` variants, auth-int, userhash §3.4.4),
- RFC 8760 (the algorithm names for SIP).

Strings are hashed as UTF-8 (RFC 3261 §25: SIP text is UTF-8; RFC 7616 §4 charset=UTF-8).
`surrogateescape` lets a codec that decoded undecodable octets that way round-trip them.
SHA-512-256 is FIPS 180-4 SHA-512/256 (own initial value), NOT SHA-512 truncated: RFC 7616
§3.9.2 prints values computed with the latter (see the erratum in the digest vectors README).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "ALGORITHMS",
    "ALGORITHM_BY_LOWERCASE",
    "BASE_ALGORITHMS",
    "HEX_DIGITS",
    "HEX_LENGTH",
    "SESSION_ALGORITHMS",
    "base_algorithm",
    "build_challenge",
    "build_challenges",
    "canonical_algorithm",
    "challenge_template",
    "compute_ha1",
    "compute_response",
    "compute_userhash",
    "hash_hex",
    "is_hex_digest",
    "is_session",
    "session_ha1",
]


def _sha512_256(data: bytes) -> str:
    # FIPS 180-4 SHA-512/256; OpenSSL provides it as "sha512_256" (RFC 7616 §3.9.2 erratum).
    return hashlib.new("sha512_256", data).hexdigest()


def _md5(data: bytes) -> str:
    # RFC 7616 §3.2 keeps MD5 for backward compatibility; not a security use of MD5 on our side.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The three hash functions (RFC 8760 §2 names); each also exists as "<name>-sess".
_HASHES: Final[Mapping[str, Callable[[bytes], str]]] = {
    "MD5": _md5,
    "SHA-256": _sha256,
    "SHA-512-256": _sha512_256,
}
BASE_ALGORITHMS: Final[tuple[str, ...]] = tuple(_HASHES)
ALGORITHMS: Final[tuple[str, ...]] = BASE_ALGORITHMS + tuple(f"{a}-sess" for a in BASE_ALGORITHMS)
# Every algorithm name -> a constructor of its hash object (`-sess` alike): `compute_response`
# reaches the hash in one look-up, with no wrapper call per digest.
_BASE_NEW: Final[Mapping[str, Callable[[bytes], Any]]] = {
    "MD5": functools.partial(hashlib.md5, usedforsecurity=False),
    "SHA-256": hashlib.sha256,
    "SHA-512-256": functools.partial(hashlib.new, "sha512_256"),
}
_NEW: Final[Mapping[str, Callable[[bytes], Any]]] = {
    name: _BASE_NEW[name.removesuffix("-sess")] for name in ALGORITHMS
}
SESSION_ALGORITHMS: Final = frozenset(name for name in ALGORITHMS if name.endswith("-sess"))
# Hex digits of a digest for each algorithm (RFC 7616 §3.4.1: response is 2*hashlen LHEX).
HEX_LENGTH: Final[Mapping[str, int]] = {
    name: (32 if name.startswith("MD5") else 64) for name in ALGORITHMS
}
# Algorithm tokens are compared case-insensitively (RFC 7616 §3.3 lists them as tokens; clients
# send "md5" too); we keep the canonical spelling.
ALGORITHM_BY_LOWERCASE: Final[Mapping[str, str]] = {name.lower(): name for name in ALGORITHMS}

# Hex text (a digest, a nonce-count): `fullmatch` it after checking the length.
HEX_DIGITS: Final = re.compile(r"[0-9a-fA-F]*")


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def canonical_algorithm(name: str) -> str | None:
    """The canonical spelling of an algorithm token (`md5-SESS` -> `MD5-sess`), or None."""
    return ALGORITHM_BY_LOWERCASE.get(name.lower())


def base_algorithm(algorithm: str) -> str:
    """The hash behind an algorithm: `SHA-256-sess` -> `SHA-256` (the key of a stored HA1)."""
    return algorithm.removesuffix("-sess")


def is_session(algorithm: str) -> bool:
    return algorithm.endswith("-sess")


def _hash(algorithm: str) -> Callable[[bytes], str]:
    try:
        return _HASHES[base_algorithm(algorithm)]
    except KeyError:
        raise ValueError(f"unknown digest algorithm {algorithm!r}") from None


def hash_hex(algorithm: str, data: bytes) -> str:
    """H(data) as lowercase hex with the hash of `algorithm` (its `-sess` variant alike)."""
    return _hash(algorithm)(data)


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2, RFC 2617 §3.2.2.2).

    For a `-sess` algorithm this is the stored part; `session_ha1` derives the per-nonce A1."""
    return _hash(algorithm)(_b(f"{username}:{realm}:{password}"))


def session_ha1(algorithm: str, ha1: str, nonce: str, cnonce: str) -> str:
    """The `-sess` HA1 = H(HA1 ":" nonce ":" cnonce) (RFC 7616 §3.4.2, RFC 2617 §3.2.2.2)."""
    return _hash(algorithm)(_b(f"{ha1}:{nonce}:{cnonce}"))


def compute_userhash(algorithm: str, username: str, realm: str) -> str:
    """userhash = H(username ":" realm) (RFC 7616 §3.4.4)."""
    return _hash(algorithm)(_b(f"{username}:{realm}"))


def compute_response(  # noqa: PLR0913 - the RFC 7616 §3.4.1 inputs, keyword-only
    algorithm: str,
    ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    nc: str | None,
    cnonce: str | None,
    qop: str | None,
    body: bytes = b"",
) -> str:
    """The request-digest (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1).

    `ha1` is the stored HA1 (H(user:realm:password)); for a `-sess` algorithm the session A1
    is derived here. `nc` is the 8-hex nonce-count exactly as sent. `qop`:
    - "auth":     H(HA1:nonce:nc:cnonce:qop:H(method:uri))
    - "auth-int": H(HA1:nonce:nc:cnonce:qop:H(method:uri:H(body)))
    - None:       H(HA1:nonce:H(method:uri))  (RFC 2069 form, RFC 3261 §22.4)
    """
    new = _NEW.get(algorithm)
    if new is None:
        raise ValueError(f"unknown digest algorithm {algorithm!r}")
    if algorithm in SESSION_ALGORITHMS:
        if cnonce is None:
            raise ValueError("a -sess algorithm needs a cnonce")
        ha1 = session_ha1(algorithm, ha1, nonce, cnonce)
    if qop == "auth-int":
        a2 = f"{method}:{uri}:".encode("utf-8", "surrogateescape") + new(body).hexdigest().encode()
    else:
        a2 = f"{method}:{uri}".encode("utf-8", "surrogateescape")
    ha2 = new(a2).hexdigest()
    if qop is None:
        return new(f"{ha1}:{nonce}:{ha2}".encode("utf-8", "surrogateescape")).hexdigest()  # type: ignore[no-any-return]
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    data = f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode("utf-8", "surrogateescape")
    return new(data).hexdigest()  # type: ignore[no-any-return]


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and HEX_DIGITS.fullmatch(text) is not None


def is_hex_digest(algorithm: str, text: str) -> bool:
    """True when `text` is hex of the length of `algorithm`'s digest (an HA1 or a response);
    False for an unknown algorithm."""
    canonical = canonical_algorithm(algorithm)
    return canonical is not None and _is_hex(text, HEX_LENGTH[canonical])


def _quoted(name: str, value: str) -> str:
    # RFC 3261 §25.1 quoted-string: CR/LF/NUL cannot be carried; `"` and `\` are escaped.
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"challenge {name} contains a line break or NUL")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


@functools.lru_cache(maxsize=64)
def _challenge_parts(realm: str, opaque: str, algorithm: str, qop: str | None) -> tuple[str, str]:
    """The parts of a challenge around its nonce: they come from the config and repeat for
    every challenge (bounded cache; an error is raised again each time, never cached)."""
    canonical = canonical_algorithm(algorithm)
    if canonical is None:
        raise ValueError(f"unknown digest algorithm {algorithm!r}")
    tail = [_quoted("opaque", opaque), f"algorithm={canonical}"]
    if qop is not None:
        tail.append(_quoted("qop", qop))
    return "Digest " + _quoted("realm", realm), ", ".join(tail)


def build_challenge(
    realm: str,
    nonce: str,
    opaque: str,
    algorithm: str,
    *,
    stale: bool,
    qop: str | None = "auth",
) -> bytes:
    """One challenge header VALUE (RFC 7616 §3.3, RFC 3261 §22.4):

    `Digest realm="…", nonce="…", opaque="…", algorithm=SHA-256, qop="auth"[, stale=true]`.

    `qop=None` omits it (RFC 2069 challenge). Raises ValueError for an unknown algorithm or a
    value that cannot be quoted (programming or config errors, never peer input)."""
    head, tail = _challenge_parts(realm, opaque, algorithm, qop)
    value = f"{head}, {_quoted('nonce', nonce)}, {tail}"
    if stale:
        # RFC 7616 §3.3: stale=true tells the client to retry with the new nonce, no prompt.
        value += ", stale=true"
    return value.encode("utf-8")


def challenge_template(
    realm: str, opaque: str, algorithm: str, *, stale: bool, qop: str | None = "auth"
) -> tuple[bytes, bytes]:
    """What `build_challenge` writes before and after the nonce, as bytes: for a nonce of our
    own (`NonceIssuer`: [A-Za-z0-9_-] only, nothing to escape) the value is
    `before + nonce + after`. Built from the config once, so a challenge only splices its
    nonce in (the same bytes as `build_challenge`; tests compare them)."""
    head, tail = _challenge_parts(realm, opaque, algorithm, qop)
    after = f'", {tail}, stale=true' if stale else f'", {tail}'
    return f'{head}, nonce="'.encode(), after.encode()


def build_challenges(
    realm: str,
    nonce: str,
    opaque: str,
    algorithms: Sequence[str],
    stale: bool,
    *,
    qop: str | None = "auth",
) -> list[bytes]:
    """One challenge value per algorithm, in the configured order of preference, all with the
    same nonce (RFC 8760 §2.4, RFC 7616 §3.7: the client uses the first it supports)."""
    return [build_challenge(realm, nonce, opaque, a, stale=stale, qop=qop) for a in algorithms]
