"""A client's Digest answer: its parameters validated, and its verification (sans-IO).

Owns: `DigestAnswer` (the parameters of one `Authorization`/`Proxy-Authorization` Digest
answer, validated: required parameters, algorithm, response length, qop/nc/cnonce, userhash,
UTF-8 text, the bound on every value), `MalformedAnswer`, `MAX_PARAM_LENGTH`, and `verify`, the
constant-time comparison of the answer with the request-digest `sipguard.auth.digest` computes.

Never does: parse SIP messages or header syntax (the codec hands us a `Mapping[str, str]` of
unquoted parameters), hash anything itself, look up users, check nonces, read clocks or log. No
secret (HA1, response) ever appears in an exception message or a repr.

Implements: RFC 7616 §3.4 (the answer's parameters), RFC 3261 §22.4 and §25.1 (SIP's use, RFC
2069 answers without qop), RFC 2617 §3.2.2.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sipguard.auth.digest import (
    ALGORITHM_BY_LOWERCASE,
    HEX_DIGITS,
    HEX_LENGTH,
    SESSION_ALGORITHMS,
    compute_response,
)

__all__ = ["MAX_PARAM_LENGTH", "DigestAnswer", "MalformedAnswer", "verify"]

# A bound on every answer parameter: nonces we issue are 43 characters and usernames/URIs in the
# wild are far below this; 100 KB values (SECURITY-CASES 23) are refused before any hashing.
MAX_PARAM_LENGTH: Final = 4096

_QOPS: Final = frozenset({"auth", "auth-int"})


class MalformedAnswer(ValueError):
    """A Digest answer that cannot be checked (missing or invalid parameter).

    The message names the parameter and the problem, never its value (it may be a secret)."""


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
        if algorithm in SESSION_ALGORITHMS:
            raise MalformedAnswer("a -sess algorithm needs qop")
        return None, None, None
    if qop not in _QOPS:
        raise MalformedAnswer("qop must be auth or auth-int")
    nc = get("nc")
    if not nc:
        raise MalformedAnswer("missing nc")
    if len(nc) != 8 or HEX_DIGITS.fullmatch(nc) is None:
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

        algorithm = ALGORITHM_BY_LOWERCASE.get(get("algorithm", "MD5").lower())
        if algorithm is None:
            raise MalformedAnswer("unknown algorithm")
        if len(response) != HEX_LENGTH[algorithm] or HEX_DIGITS.fullmatch(response) is None:
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
