"""SIP and other URIs: `SipUri`, parsed from bytes.

Owns: the RFC 3261 §19.1 reading of a URI (`parse_uri`, `check_request_uri` for the
Request-URI without building it) and what the URI regexes leave out (`check_uri_extras`: %HH
escapes, IPv6 reference syntax; `normal_host`: a host lowercase, IPv6 without brackets). Takes
bytes, returns values or raises `ParseError`; never decodes to str, never does I/O.

RFC 3261 §19.1.1, §25; RFC 5118 (IPv6 in SIP), RFC 5954 (IPv6 reference syntax).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from sipguard.errors import ParseError
from sipguard.sip.abnf import HOST, PASSWORD, PCHAR, PORT, SIP_SCHEME, URI_HEADERS, USER
from sipguard.sip.params import Params

__all__ = ["SipUri", "check_request_uri", "check_uri_extras", "normal_host", "parse_uri"]

# A whole sip/sips URI; groups: scheme, user, password, host, port, uri-parameters, headers.
_SIP_URI_RE = re.compile(
    rb"(" + SIP_SCHEME + rb"):"
    rb"(?:(" + USER + rb")(?::(" + PASSWORD + rb"))?@)?"
    rb"(" + HOST + rb")(?::(" + PORT + rb"))?"
    rb"((?:;" + PCHAR + rb"+(?:=" + PCHAR + rb"+)?)*)"
    rb"(?:\?(" + URI_HEADERS + rb"))?"
)
# An absoluteURI of another scheme (group: the scheme), and a '%' that is not a %HH escape.
_OTHER_URI_RE = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*):[^\x00-\x20\x7f<>\"]+")
_BAD_ESCAPE_RE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _check_ipv6(inner: bytes) -> None:
    # RFC 5954 corrected the RFC 3261 IPv6reference ABNF: only RFC 4291 text forms are valid,
    # so the three-colon form of RFC 5118 §4.10 is rejected (our pinned choice).
    try:
        ipaddress.IPv6Address(inner.decode("ascii"))
    except ValueError:
        raise ParseError("invalid IPv6 reference") from None


def normal_host(host: bytes) -> bytes:
    """Host as written (already matched by HOST) -> lowercase, IPv6 without brackets."""
    if host[:1] == b"[":
        inner = host[1:-1]
        _check_ipv6(inner)
        return inner.lower()
    return host.lower()


def _port(port: bytes | None) -> int | None:
    # the grammar (PORT) already bounds the value to 0..65535
    return None if port is None else int(port)


def check_uri_extras(uri: bytes) -> None:
    """What the URI regexes leave out: %HH escapes, IPv6 syntax, port range."""
    if uri.find(b"%") >= 0 and _BAD_ESCAPE_RE.search(uri) is not None:
        raise ParseError("malformed escape in URI")
    if uri.find(b"[") >= 0:
        m = _SIP_URI_RE.fullmatch(uri)
        if m is not None:
            normal_host(m.group(4))


@dataclass(frozen=True, slots=True)
class SipUri:
    """A URI. For `sip`/`sips` every part is parsed; for other schemes (`tel`, unknown) only
    `scheme` and `raw` are meaningful (`host` is empty). `scheme` is lowercase; `user` and
    `password` are raw (escapes kept, `;` allowed in the user part: RFC 4475 semiuri); `host`
    is lowercase with IPv6 brackets removed; param names are lowercase, values raw; `headers`
    are the `?name=value` pairs, raw."""

    scheme: bytes
    user: bytes | None
    password: bytes | None = field(repr=False)
    host: bytes
    port: int | None
    params: Params
    headers: tuple[tuple[bytes, bytes], ...]
    raw: bytes = field(repr=False)  # may hold the (deprecated) password

    @property
    def is_sip(self) -> bool:
        return self.scheme in (b"sip", b"sips")

    def param(self, name: bytes) -> bytes | None:
        """Value of URI parameter `name` (lowercase); None when absent or without value."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    def has_param(self, name: bytes) -> bool:
        return any(key == name for key, _ in self.params)


def parse_uri(raw: bytes, *, max_bytes: int = 1024) -> SipUri:
    """Parse a URI. `sip:`/`sips:` must match RFC 3261 §19.1 exactly (an unbracketed IPv6
    host is an error, RFC 5118 §4.2; `[2001:db8::10:5070]` is a host without port, §4.3;
    escapes must be %HH); other schemes are only checked to be an absoluteURI and recorded."""
    if len(raw) > max_bytes:
        raise ParseError("URI too long")
    m = _SIP_URI_RE.fullmatch(raw)
    if m is None:
        other = _OTHER_URI_RE.fullmatch(raw)
        if other is None or other.group(1).lower() in (b"sip", b"sips"):
            raise ParseError("malformed URI")
        return SipUri(other.group(1).lower(), None, None, b"", None, (), (), raw)
    if raw.find(b"%") >= 0 and _BAD_ESCAPE_RE.search(raw) is not None:
        raise ParseError("malformed escape in URI")
    scheme, user, password, host, port, params_raw, headers_raw = m.groups()
    params: Params = ()
    if params_raw:
        items = []
        for item in params_raw[1:].split(b";"):
            name, eq, value = item.partition(b"=")
            items.append((name.lower(), value if eq else None))
        params = tuple(items)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if headers_raw:
        headers = tuple(
            (name, value)
            for name, _, value in (item.partition(b"=") for item in headers_raw.split(b"&"))
        )
    return SipUri(
        scheme.lower(), user, password, normal_host(host), _port(port), params, headers, raw
    )


def check_request_uri(raw: bytes, max_bytes: int) -> None:
    """Validate a Request-URI without building it: a sip/sips URI per §19.1 without URI
    headers (RFC 4475 escruri), or an absoluteURI of another scheme (the core answers 416)."""
    if len(raw) > max_bytes:
        raise ParseError("URI too long")
    m = _SIP_URI_RE.fullmatch(raw)
    if m is None:
        other = _OTHER_URI_RE.fullmatch(raw)
        if other is None or other.group(1).lower() in (b"sip", b"sips"):
            raise ParseError("malformed Request-URI")
        return
    if m.group(7) is not None:
        raise ParseError("headers in the Request-URI")
    if raw.find(b"%") >= 0 and _BAD_ESCAPE_RE.search(raw) is not None:
        raise ParseError("malformed escape in URI")
    host = m.group(4)
    if host[:1] == b"[":
        normal_host(host)
