"""Digest credentials and challenges as they appear in SIP headers (RFC 3261 §22.4, §25).

Owns: `Credentials` and the reading of an Authorization / Proxy-Authorization value
(`parse_credentials`) or a WWW- / Proxy-Authenticate value (`parse_challenge`): the scheme and
the auth-params, decoded as latin-1 (lossless). Takes bytes, returns values or raises
`ParseError`; never checks a response (that is `sipguard.auth`), never does I/O.

RFC 3261 §22.4, §25 (credentials, challenge, auth-param); RFC 7616 §3.4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sipguard.errors import ParseError
from sipguard.sip.abnf import TOKEN_CLASS
from sipguard.sip.params import Lowered

__all__ = ["Credentials", "parse_challenge", "parse_credentials"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """An Authorization / Proxy-Authorization value (or, from `parse_challenge`, a WWW- or
    Proxy-Authenticate value). `scheme` is as received (compare case-insensitively);
    `params` maps lowercase parameter names to values (quotes removed, backslash escapes
    resolved), decoded as latin-1 so that `value.encode("latin-1")` gives back the octets.
    For a scheme other than Digest `params` is empty. Never printed: it holds the response."""

    scheme: bytes
    params: dict[str, str] = field(repr=False)

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == b"digest"


# auth-param name as received -> lowercase (str: the params are read from latin-1)
_auth_name: Lowered[str] = Lowered()
_AUTH_SCHEME_RE = re.compile(rb"[ \t]*([" + TOKEN_CLASS + rb"]+)(?:[ \t]+|$)")
# The auth-params are read from the value decoded as latin-1 (one octet, one character, so
# offsets and octets are kept; `Credentials.params` is str) in ONE findall instead of a Python
# loop of matches: each item is `auth-param` (RFC 3261 §25: LWS around '=' and ','; a value
# is a quoted-string or a token that may hold '/' and ':' as real UAs write `uri=sip:...`
# unquoted) followed by its separator, ',' or the end; where an auth-param does not start,
# the last alternative takes the REST of the value as `junk` (one character would let findall
# try again at every following position: quadratic on a long malformed value). So findall
# covers every character, and the value is well formed exactly when no item is junk and the
# last item ends at the end.
_AUTH_TOKEN_CLASS = TOKEN_CLASS.decode("ascii")
# qdtext / quoted-pair unrolled (sre runs a one-class repeat in a tight loop, an alternation
# per character costs several times more), classes as ranges so that sre tests them in a
# bitmap: every character here is one octet (latin-1)
_AUTH_QDTEXT = r"[\x00-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\xff]*+"
_AUTH_QUOTED_CONTENT = _AUTH_QDTEXT + r"(?:\\[\x00-\x09\x0b\x0c\x0e-\xff]" + _AUTH_QDTEXT + r")*+"
_AUTH_ITEM_RE = re.compile(
    r"[ \t]*+([" + _AUTH_TOKEN_CLASS + r"]++)[ \t]*+=[ \t]*+(?:\"(" + _AUTH_QUOTED_CONTENT
    + r')"|([' + _AUTH_TOKEN_CLASS + r"/:]++))[ \t]*+(,|\Z)|([\x00-\xff]++)"
)  # fmt: skip
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)
_new_credentials = object.__new__
_set = object.__setattr__


def _unquote(match: re.Match[str]) -> str:
    return match.group(1)


def _parse_auth(value: bytes, *, max_bytes: int) -> Credentials:
    if len(value) > max_bytes:
        raise ParseError("authentication value too long")
    m = _AUTH_SCHEME_RE.match(value)
    if m is None:
        raise ParseError("malformed authentication scheme")
    scheme = m.group(1)
    if scheme.lower() != b"digest":
        return Credentials(scheme, {})
    pos = m.end()
    if pos >= len(value):
        raise ParseError("digest without parameters")
    items = _AUTH_ITEM_RE.findall(value.decode("latin-1"), pos)
    params: dict[str, str] = {}
    lowered = _auth_name
    for name, quoted, token, _, junk in items:
        if junk:
            raise ParseError("malformed digest parameter")
        # a token never holds a backslash; a quoted-string holds one only in a quoted-pair,
        # whose escape is resolved (RFC 3261 §25) -- the substitution only when there is one
        if quoted:
            params[lowered[name]] = (
                _QUOTED_PAIR_RE.sub(_unquote, quoted) if "\\" in quoted else quoted
            )
        else:
            params[lowered[name]] = token  # an empty quoted-string gives "" as well
    if items[-1][3]:
        raise ParseError("trailing comma in digest parameters")
    if len(params) != len(items):
        raise ParseError("duplicate digest parameter")
    # built as the frozen dataclass's __init__ would, without its per-field checks
    credentials: Credentials = _new_credentials(Credentials)
    _set(credentials, "scheme", scheme)
    _set(credentials, "params", params)
    return credentials


def parse_credentials(value: bytes, *, max_bytes: int = 8192) -> Credentials:
    """Parse an Authorization / Proxy-Authorization value (RFC 3261 §22.4, §25 credentials).
    Raises ParseError on an unterminated quoted string, a parameter without `=`, a duplicate
    parameter, a trailing comma or a value longer than `max_bytes`. Non-Digest schemes return
    their scheme with empty params (the caller decides; RFC 4475 regaut01)."""
    return _parse_auth(value, max_bytes=max_bytes)


def parse_challenge(value: bytes, *, max_bytes: int = 8192) -> Credentials:
    """Parse a WWW-Authenticate / Proxy-Authenticate value; same rules and shape as
    `parse_credentials`."""
    return _parse_auth(value, max_bytes=max_bytes)
