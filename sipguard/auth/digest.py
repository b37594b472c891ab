"""Digest access authentication math and the answer/challenge values (sans-IO).

Owns: the hash functions of each algorithm, HA1/response computation, validation of the
parameters of an `Authorization`/`Proxy-Authorization` Digest answer, constant-time
verification, and the text of `WWW-Authenticate`/`Proxy-Authenticate` challenge values.

Never does: parse SIP messages or header syntax (the codec hands us a `Mapping[str, str]` of
unquoted parameters), look up users, check nonces, read clocks or log. No secret (password,
HA1, response) ever appears in an exception message or a repr.

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
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ALGORITHMS",
    "BASE_ALGORITHMS",
    "HEX_LENGTH",
    "MAX_PARAM_LENGTH",
    "DigestAnswer",
    "MalformedAnswer",
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
    "verify",
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
_SESSIONS: Final = frozenset(name for name in ALGORITHMS if name.endswith("-sess"))
# Hex digits of a digest for each algorithm (RFC 7616 §3.4.1: response is 2*hashlen LHEX).
HEX_LENGTH: Final[Mapping[str, int]] = {
    name: (32 if name.startswith("MD5") else 64) for name in ALGORITHMS
}
# Algorithm tokens are compared case-insensitively (RFC 7616 §3.3 lists them as tokens; clients
# send "md5" too); we keep the canonical spelling.
_BY_LOWER: Final[Mapping[str, str]] = {name.lower(): name for name in ALGORITHMS}

# A bound on every answer parameter: nonces we issue are 43 characters and usernames/URIs in the
# wild are far below this; 100 KB values (SECURITY-CASES 23) are refused before any hashing.
MAX_PARAM_LENGTH: Final = 4096

_QOPS: Final = frozenset({"auth", "auth-int"})
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]*")


class MalformedAnswer(ValueError):
    """A Digest answer that cannot be checked (missing or invalid parameter).

    The message names the parameter and the problem, never its value (it may be a secret)."""


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def canonical_algorithm(name: str) -> str | None:
    """The canonical spelling of an algorithm token (`md5-SESS` -> `MD5-sess`), or None."""
    return _BY_LOWER.get(name.lower())


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
    if algorithm in _SESSIONS:
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
    return len(text) == length and _HEX_RE.fullmatch(text) is not None


def is_hex_digest(algorithm: str, text: str) -> bool:
    """True when `text` is hex of the length of `algorithm`'s digest (an HA1 or a response);
    False for an unknown algorithm."""
    canonical = canonical_algorithm(algorithm)
    return canonical is not None and _is_hex(text, HEX_LENGTH[canonical])


# The parameters every answer carries, in the order a missing one is reported.
_REQUIRED: Final = ("username", "realm", "nonce", "uri", "response")


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise MalformedAnswer(f"missing {name}")
    return value


def _qop_fields(
    params: Mapping[str, str], algorithm: str
) -> tuple[str | None, str | None, str | None]:
    """An answer's qop, nc and cnonce (RFC 7616 §3.4): with a qop, nc is 8 hex digits and a
    cnonce is present; without one, no -sess algorithm (its A1 needs the cnonce, §3.4.2)."""
    get = params.get
    qop = get("qop")
    if qop is None:
        if algorithm in _SESSIONS:
            raise MalformedAnswer("a -sess algorithm needs qop")
        return None, None, None
    if qop not in _QOPS:
        raise MalformedAnswer("qop must be auth or auth-int")
    nc = get("nc")
    if not nc:
        raise MalformedAnswer("missing nc")
    if len(nc) != 8 or _HEX_RE.fullmatch(nc) is None:
        raise MalformedAnswer("nc must be 8 hex digits")
    cnonce = get("cnonce")
    if not cnonce:
        raise MalformedAnswer("missing cnonce")
    return qop, nc, cnonce


@dataclass(frozen=True, slots=True)
class DigestAnswer:
    """The parameters of one Digest answer, validated (RFC 7616 §3.4, RFC 3261 §25.1).

    `algorithm` is canonical (absent means MD5, RFC 2617 §3.2.1); `response` is lowercase hex;
    `nc` is kept as sent because it is hashed as sent. `userhash` tells that `username` is
    H(username:realm) (RFC 7616 §3.4.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str = field(repr=False)
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    userhash: bool = False

    @property
    def nonce_count(self) -> int:
        """The nonce-count as a number; 0 when there is no qop (RFC 2069 answers carry none)."""
        return int(self.nc, 16) if self.nc is not None else 0

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, latin1: bool = False) -> DigestAnswer:
        """Validate unquoted Digest parameters (names case-insensitive, RFC 3261 §7.3.1).

        `latin1=True`: the values were decoded from the wire as latin-1 (one char per octet,
        as `sipguard.sip.parse_credentials` does); they are turned back into their octets and
        read as UTF-8 (RFC 3261 §25, RFC 7616 §4), so that `username` compares equal to the
        configured one and the octets hashed are the octets the client hashed. Values that
        are not valid UTF-8 are refused, so `field.encode("utf-8")` never raises on an answer.

        Raises `MalformedAnswer` (a `ValueError`) and nothing else, whatever the input."""
        return cls.from_lowered(_lowered(params, latin1))

    @classmethod
    def from_lowered(cls, params: Mapping[str, str]) -> DigestAnswer:
        """`from_params` for parameters whose names are lowercase and unique and whose values
        are UTF-8 text of at most MAX_PARAM_LENGTH characters: what `from_params` makes of any
        parameters first, and what `sipguard.sip.parse_credentials` gives for a header value
        that is ASCII and no longer than MAX_PARAM_LENGTH (the caller's check, once per value).

        Raises `MalformedAnswer` (a `ValueError`) and nothing else, whatever the input."""
        get = params.get
        username = get("username")
        realm = get("realm")
        nonce = get("nonce")
        uri = get("uri")
        response = get("response")
        if not (username and realm and nonce and uri and response):
            for name in _REQUIRED:
                _required(params, name)
        assert username and realm and nonce and uri and response  # for mypy: checked above

        algorithm = _BY_LOWER.get(get("algorithm", "MD5").lower())
        if algorithm is None:
            raise MalformedAnswer("unknown algorithm")
        if len(response) != HEX_LENGTH[algorithm] or _HEX_RE.fullmatch(response) is None:
            raise MalformedAnswer("response is not a hex digest of the algorithm's length")

        qop, nc, cnonce = _qop_fields(params, algorithm)
        userhash = get("userhash")
        if userhash is not None:
            userhash = userhash.lower()
            if userhash not in ("true", "false"):
                raise MalformedAnswer("userhash must be true or false")

        # Positional, in field order: a frozen dataclass is dear enough to build per request.
        return cls(
            username,
            realm,
            nonce,
            uri,
            response.lower(),
            algorithm,
            qop,
            nc,
            cnonce,
            get("opaque"),
            userhash == "true",
        )


def verify(answer: DigestAnswer, ha1: str, method: str, body: bytes = b"") -> bool:
    """True when `answer.response` is the request-digest for `ha1` and this request.

    `ha1` is the stored HA1 of `base_algorithm(answer.algorithm)`; `method` is the method of the
    request being authenticated (never the answer's own claim, RFC 3261 §22.4) and `body` its
    body (hashed for auth-int). The comparison is constant-time (`hmac.compare_digest`)."""
    expected = compute_response(
        answer.algorithm,
        ha1,
        method=method,
        uri=answer.uri,
        nonce=answer.nonce,
        nc=answer.nc,
        cnonce=answer.cnonce,
        qop=answer.qop,
        body=body,
    )
    # both are ASCII hex (`from_params` checked the response), compared as str
    return hmac.compare_digest(expected, answer.response)


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


def _lowered(params: Mapping[str, str], latin1: bool) -> dict[str, str]:
    """The parameters by lowercase name, each value as UTF-8 text (see `from_params`)."""
    lowered: dict[str, str] = {}
    for name, raw_value in params.items():
        key = name.lower()
        if key in lowered:
            # `realm=a, REALM=b`: never pick one (SECURITY-CASES 23).
            raise MalformedAnswer(f"duplicate parameter {key!r}"[:80])
        if len(raw_value) > MAX_PARAM_LENGTH or len(key) > MAX_PARAM_LENGTH:
            raise MalformedAnswer(f"parameter {key!r} is too long"[:80])
        value = raw_value
        if not value.isascii():  # ASCII is the same text in every reading; skip the work
            try:
                if latin1:
                    value = raw_value.encode("latin-1").decode("utf-8")
                value.encode("utf-8")
            except UnicodeError:
                # Invalid UTF-8 is not SIP text (RFC 3261 §25.1, UTF8-NONASCII); refusing it
                # here means every field of an answer encodes to UTF-8 without an error.
                raise MalformedAnswer(f"parameter {key!r} is not UTF-8 text"[:80]) from None
        lowered[key] = value
    return lowered
