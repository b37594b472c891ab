"""Typed header values parsed from bytes: Via, name-addr / addr-spec, CSeq.

Owns: `Via`, `NameAddr` and `CSeq` and their parsers (`parse_via`, `parse_via_values`,
`parse_name_addr`, `parse_name_addr_list`, `parse_cseq`): each value is validated when built,
its URI and parameters split on first use. Takes bytes, returns values or raises `ParseError`;
never decodes wire bytes to str, never does I/O. The fast path's variants of Via and NameAddr
(built from a match that validated them) live in `fast`.

RFC 3261 §20.10 (name-addr), §20.16 (CSeq), §20.42 (Via), §25; RFC 3581 (rport); RFC 5118 §4.5
(IPv6 in Via received).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sipguard.errors import ParseError
from sipguard.sip.abnf import (
    OTHER_ADDR_SPEC_NC,
    OTHER_URI_NC,
    PARAMS,
    QUOTED,
    SIP_ADDR_SPEC_NC,
    SIP_URI_NC,
    TOKEN,
    VIA_HEAD,
)
from sipguard.sip.lists import split_list
from sipguard.sip.params import Parameters, Params, parse_params
from sipguard.sip.uri import SipUri, check_uri_extras, normal_host, parse_uri

__all__ = [
    "CSeq",
    "NameAddr",
    "Via",
    "parse_cseq",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_via",
    "parse_via_values",
]

# One name-addr (RFC 3261 §20.10): [display-name] LAQUOT addr-spec RAQUOT *(SEMI param).
# Inside <> no whitespace is allowed (RFC 4475 badaspec is rejected: our pinned choice).
_NAME_ADDR_RE = re.compile(
    rb"(?:(" + QUOTED + rb")|(" + TOKEN + rb"(?:[ \t]+" + TOKEN + rb")*))?[ \t]*"
    rb"<(" + SIP_URI_NC + rb"|" + OTHER_URI_NC + rb")>(" + PARAMS + rb")[ \t]*"
)
# addr-spec without <>: the URI may not hold ';', '?' or ',' (RFC 3261 §20; RFC 4475 regbadct),
# so what follows the first ';' are header parameters (RFC 4475 cparam01).
_ADDR_SPEC_RE = re.compile(
    rb"(" + SIP_ADDR_SPEC_NC + rb"|" + OTHER_ADDR_SPEC_NC + rb")(" + PARAMS + rb")[ \t]*"
)
# Via (RFC 3261 §20.42): the head (`abnf.VIA_HEAD`) then *( SEMI via-params ).
_VIA_RE = re.compile(VIA_HEAD + rb"(" + PARAMS + rb")[ \t]*")
# CSeq (RFC 3261 §20.16): the number is bounded to 32 bits after the match.
_CSEQ_RE = re.compile(rb"([0-9]{1,10})[ \t]+(" + TOKEN + rb")")
_MAX_32 = 0xFFFFFFFF
_new_tuple = tuple.__new__


class Via(Parameters):
    """One Via value (RFC 3261 §20.42), validated when built; parameters split on first use.

    `protocol` e.g. `SIP/2.0`; `transport` uppercase (`UDP`, `TCP`, `TLS`, or an unknown token
    kept, uppercased); `host` lowercase with IPv6 brackets removed; `port` int or None;
    `params` in order, names lowercase, values raw (None for a flag); `raw` the value as
    received (unfolded).

    RFC 3581 rport is two properties so that a flag is never mistaken for a port: `has_rport`
    (present, with or without value) and `rport` (its port, None when absent or a bare flag).
    Effectively immutable (a slots class rather than a frozen dataclass: one is built per Via
    on the hot path, and the parameters are split lazily)."""

    __slots__ = (
        "_branch",
        "host",
        "port",
        "protocol",
        "raw",
        "transport",
    )

    protocol: bytes
    transport: bytes
    host: bytes
    port: int | None
    raw: bytes

    def __init__(self, value: bytes) -> None:
        m = _VIA_RE.fullmatch(value)
        if m is None:
            raise ParseError("malformed Via")
        name, version, transport, host, port, params = m.groups()
        self.protocol = name + b"/" + version
        self.transport = transport.upper()
        self.host = normal_host(host)
        self.port = None if port is None else int(port)
        self.raw = value
        self._params_raw = params
        self._params: Params | None = None
        self._branch: bytes | None = None
        if params.find(b"=") >= 0 and params.lower().find(b"rport") >= 0:
            # validate now so that the rport property never raises (RFC 3581: 1*DIGIT)
            rport = self.param(b"rport")
            if rport is not None and (not rport.isdigit() or len(rport) > 5 or int(rport) > 65535):
                raise ParseError("malformed rport")

    @property
    def branch(self) -> bytes | None:
        branch = self._branch  # known without splitting the parameters (fast path)
        if branch is not None:
            return branch
        return self.param(b"branch")

    @property
    def received(self) -> bytes | None:
        """The received address, IPv6 brackets removed (RFC 5118 §4.5: both forms appear)."""
        value = self.param(b"received")
        if value is not None and value[:1] == b"[" and value[-1:] == b"]":
            return value[1:-1]
        return value

    @property
    def has_rport(self) -> bool:
        # parameters that do not spell `rport` (in any case) hold none: known without
        # splitting them (many UAs send none)
        raw = self._params_raw
        if b"rport" not in raw and b"rport" not in raw.lower():
            return False
        return self.has_param(b"rport")

    @property
    def rport(self) -> int | None:
        value = self.param(b"rport")
        return int(value) if value else None

    @property
    def sent_by(self) -> bytes:
        """host[:port] as it would be written (brackets around IPv6)."""
        host = b"[" + self.host + b"]" if self.host.find(b":") >= 0 else self.host
        return host if self.port is None else host + b":%d" % self.port

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Via) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return (
            f"Via(protocol={self.protocol!r}, transport={self.transport!r}, host={self.host!r}, "
            f"port={self.port!r}, params={self.params!r})"
        )


class NameAddr(Parameters):
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...),
    validated when built; the URI and the parameters are split on first use.

    `display_name`: as written (quotes removed, escapes kept) or None; `uri`: a `SipUri`
    (non-SIP schemes carry only scheme and raw); `params`: header parameters (after `>` or
    after an addr-spec), names lowercase, values raw; `raw`: the value as received (unfolded).
    Effectively immutable (slots class for speed, see `Via`)."""

    __slots__ = ("_uri", "_uri_max", "display_name", "raw", "uri_raw")

    display_name: bytes | None
    uri_raw: bytes
    raw: bytes

    def __init__(self, value: bytes, max_uri_bytes: int = 1024) -> None:
        m = _NAME_ADDR_RE.fullmatch(value)
        if m is not None:
            quoted, tokens, uri, params = m.groups()
            self.display_name = quoted[1:-1] if quoted is not None else tokens
        else:
            m = _ADDR_SPEC_RE.fullmatch(value)
            if m is None:
                raise ParseError("malformed name-addr or addr-spec")
            uri, params = m.groups()
            self.display_name = None
        if len(uri) > max_uri_bytes:
            raise ParseError("URI too long")
        if uri.find(b"%") >= 0 or uri.find(b"[") >= 0:
            check_uri_extras(uri)
        self.uri_raw = uri
        self.raw = value
        self._params_raw = params
        self._params: Params | None = None
        self._uri: SipUri | None = None
        self._uri_max = max_uri_bytes

    @property
    def uri(self) -> SipUri:
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self.uri_raw, max_bytes=self._uri_max)
        return uri

    @property
    def tag(self) -> bytes | None:
        """The `tag` parameter (RFC 3261 §19.3), read on every message: `param` inlined."""
        params = self._params
        if params is None:
            params = self._params = parse_params(self._params_raw)
        for key, value in params:
            if key == b"tag":
                return value
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameAddr) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return (
            f"NameAddr(display_name={self.display_name!r}, uri={self.uri_raw!r}, "
            f"params={self.params!r})"
        )


class CSeq(NamedTuple):
    """RFC 3261 §20.16: sequence number (32 bits) and method (case-sensitive, as received)."""

    number: int
    method: bytes


def parse_via(value: bytes) -> Via:
    """Parse one Via value (not a list)."""
    return Via(value)


def parse_via_values(value: bytes) -> list[Via]:
    """All Via values of one header field value (a comma list)."""
    if value.find(b",") < 0:
        return [Via(value)]
    vias = [Via(part) for part in split_list(value)]
    if not vias:
        raise ParseError("empty Via")
    return vias


def parse_name_addr(value: bytes, *, max_uri_bytes: int = 1024) -> NameAddr:
    """Parse `( name-addr / addr-spec ) *( SEMI generic-param )` (RFC 3261 §20.10, §20.20)."""
    return NameAddr(value, max_uri_bytes)


def parse_name_addr_list(value: bytes, *, max_uri_bytes: int = 1024) -> list[NameAddr]:
    if value.find(b",") < 0:
        return [NameAddr(value, max_uri_bytes)]
    return [NameAddr(part, max_uri_bytes) for part in split_list(value)]


def parse_cseq(value: bytes) -> CSeq:
    """RFC 3261 §20.16: `1*DIGIT LWS Method`; the number must fit in 32 bits (RFC 4475
    scalar02: 2^65 is a 400). The digit count is bounded before int()."""
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise ParseError("malformed CSeq")
    number = int(m.group(1))
    if number > _MAX_32:
        raise ParseError("CSeq number out of range")
    return _new_tuple(CSeq, (number, m.group(2)))
