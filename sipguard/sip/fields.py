"""Typed SIP header values, parsed from bytes on demand.

Owns: the RFC 3261 §25 grammar of the values sipguard reads (SIP/SIPS URIs, name-addr and
addr-spec with header parameters, Via, CSeq, comma lists, digest credentials and challenges) and
the value types they produce. Every function takes bytes and returns values or raises
`ParseError`; nothing else escapes. Never decodes wire bytes to str except the digest
auth-params (latin-1, lossless), never serialises a whole message, never does I/O.

RFC 3261 §7.3.1 (header field format, comma lists), §19.1 (SIP URI), §20 (headers), §25 (ABNF);
RFC 3581 (rport); RFC 5118 and RFC 5954 (IPv6 references); RFC 7616 / RFC 3261 §22.4 (digest
auth-params).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from sipguard.errors import ParseError

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "CSeq",
    "Credentials",
    "NameAddr",
    "SipUri",
    "Via",
    "canonical_key",
    "parse_challenge",
    "parse_credentials",
    "parse_cseq",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_uri",
    "parse_via_values",
    "split_list",
]

# RFC 3261 §7.3.3 and the IANA registry: compact form -> full lowercase name.
COMPACT_FORMS: dict[bytes, bytes] = {
    b"i": b"call-id",
    b"m": b"contact",
    b"e": b"content-encoding",
    b"l": b"content-length",
    b"c": b"content-type",
    b"f": b"from",
    b"s": b"subject",
    b"k": b"supported",
    b"t": b"to",
    b"v": b"via",
    b"o": b"event",
    b"u": b"allow-events",
    b"r": b"refer-to",
    b"b": b"referred-by",
    b"a": b"accept-contact",
    b"j": b"reject-contact",
    b"d": b"request-disposition",
    b"x": b"session-expires",
    b"y": b"identity",
    b"n": b"identity-info",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1: "#" rules in §25). The
# digest headers are NOT lists: their commas separate auth-params of one value.
LIST_HEADERS: frozenset[bytes] = frozenset(
    {
        b"via",
        b"route",
        b"record-route",
        b"path",
        b"service-route",
        b"contact",
        b"allow",
        b"supported",
        b"require",
        b"proxy-require",
        b"unsupported",
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"allow-events",
        b"content-encoding",
        b"content-language",
        b"in-reply-to",
        b"alert-info",
        b"call-info",
        b"error-info",
        b"warning",
        b"p-asserted-identity",
        b"p-preferred-identity",
        b"accept-contact",
        b"reject-contact",
        b"request-disposition",
    }
)

_TOKEN_CLASS = rb"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rb"[" + _TOKEN_CLASS + rb"]+")
# qdtext per RFC 3261 §25 plus raw control bytes other than CR/LF: RFC 4475 §3.1.1.2 (intmeth)
# shows BEL/NUL/DEL in a display name; accepting them raw is harmless for a proxy that forwards
# the bytes, and the quoted string still ends only at an unescaped DQUOTE.
_QUOTED = rb'"(?:[^"\\\r\n]|\\[^\r\n])*"'
QUOTED_RE = re.compile(_QUOTED)
_GEN_VALUE = rb"(?:" + _QUOTED + rb"|\[[0-9A-Fa-f:.]+\]|[" + _TOKEN_CLASS + rb":]+)"
# generic-param with the SWS RFC 3261 allows around SEMI and EQUAL (values kept raw).
_PARAM_RE = re.compile(
    rb"[ \t]*;[ \t]*([" + _TOKEN_CLASS + rb"]+)(?:[ \t]*=[ \t]*(" + _GEN_VALUE + rb"))?"
)
_WS_RE = re.compile(rb"[ \t]*")

# SIP URI pieces (RFC 3261 §25: user, password, hostport, uri-parameters, headers).
_USER = rb"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+"
_PASSWORD = rb"[A-Za-z0-9\-_.!~*'()&=+$,%]*"
_PCHAR = rb"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]"
_HCHAR = rb"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]"
_SIP_URI_RE = re.compile(
    rb"([Ss][Ii][Pp][Ss]?):"
    rb"(?:(" + _USER + rb")(?::(" + _PASSWORD + rb"))?@)?"
    rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    rb"(?::([0-9]{1,5}))?"
    rb"((?:;" + _PCHAR + rb"+(?:=" + _PCHAR + rb"+)?)*)"
    rb"(?:\?(" + _HCHAR + rb"+=" + _HCHAR + rb"*(?:&" + _HCHAR + rb"+=" + _HCHAR + rb"*)*))?"
)
_HOSTNAME_RE = re.compile(
    rb"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?"
)
_BAD_ESCAPE_RE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_SCHEME_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*:")
# RFC 3261 §19.1.1 absoluteURI: anything visible without the delimiters a header would need.
_OTHER_URI_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\x7f<>\"]+")

_VIA_HEAD_RE = re.compile(
    rb"[ \t]*([" + _TOKEN_CLASS + rb"]+)[ \t]*/[ \t]*([" + _TOKEN_CLASS + rb"]+)[ \t]*/[ \t]*"
    rb"([" + _TOKEN_CLASS + rb"]+)[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    rb"(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)
_CSEQ_RE = re.compile(rb"([0-9]{1,10})[ \t]+([" + _TOKEN_CLASS + rb"]+)")
_NAME_ADDR_RE = re.compile(
    rb"(?:(" + _QUOTED + rb")|([" + _TOKEN_CLASS + rb"]+(?:[ \t]+[" + _TOKEN_CLASS + rb"]+)*))?"
    rb"[ \t]*<([^<>\x00-\x20\x7f\"]+)>"
)
_ADDR_SPEC_RE = re.compile(rb"[^;,?<>\x00-\x20\x7f\"]+")
# One list element: quoted strings and <...> may hold commas (RFC 3261 §7.3.1).
_LIST_ITEM_RE = re.compile(rb'(?:"(?:[^"\\]|\\.)*"|<[^>]*>|[^,"<])+', re.S)

_MAX_32 = 0xFFFFFFFF

Params = tuple[tuple[bytes, bytes | None], ...]


def _fail(detail: str) -> ParseError:
    return ParseError(detail)


def canonical_key(name: bytes) -> bytes:
    """Lowercase full header name for a name as received (compact forms expanded)."""
    low = name.lower()
    return COMPACT_FORMS.get(low, low)


def _find_param(params: Params, name: bytes) -> tuple[bool, bytes | None]:
    for key, value in params:
        if key == name:
            return True, value
    return False, None


@dataclass(frozen=True, slots=True)
class SipUri:
    """A URI. For `sip`/`sips` every part is parsed; for other schemes (`tel`, unknown) only
    `scheme` and `raw` are meaningful (`host` is empty). `scheme` is lowercase; `user` and
    `password` are raw (escapes kept, `;` allowed in the user part: RFC 4475 semiuri); `host`
    is lowercase with IPv6 brackets removed; param names are lowercase, values raw."""

    scheme: bytes
    user: bytes | None
    password: bytes | None = field(repr=False)
    host: bytes
    port: int | None
    params: Params
    headers: tuple[tuple[bytes, bytes], ...]
    raw: bytes

    @property
    def is_sip(self) -> bool:
        return self.scheme in (b"sip", b"sips")

    def param(self, name: bytes) -> bytes | None:
        """Value of URI parameter `name` (lowercase); None when absent or without value."""
        return _find_param(self.params, name)[1]

    def has_param(self, name: bytes) -> bool:
        return _find_param(self.params, name)[0]


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42). `transport` is uppercase (`UDP`, `TCP`, `TLS`, or an
    unknown token kept as sent, uppercased); `host` has IPv6 brackets removed; `params` keep
    their order, names lowercase, values raw or None for a flag.

    RFC 3581 rport is exposed as two fields so that a flag can never be mistaken for a port:
    `has_rport` (the parameter is present, with or without value) and `rport` (its port, or
    None when absent or a bare flag)."""

    protocol: bytes
    transport: bytes
    host: bytes
    port: int | None
    params: Params
    raw: bytes

    def param(self, name: bytes) -> bytes | None:
        return _find_param(self.params, name)[1]

    def has_param(self, name: bytes) -> bool:
        return _find_param(self.params, name)[0]

    @property
    def branch(self) -> bytes | None:
        return _find_param(self.params, b"branch")[1]

    @property
    def received(self) -> bytes | None:
        """The received address, IPv6 brackets removed (RFC 5118 §4.5: both forms appear)."""
        value = _find_param(self.params, b"received")[1]
        if value is not None and value[:1] == b"[" and value[-1:] == b"]":
            return value[1:-1]
        return value

    @property
    def has_rport(self) -> bool:
        return _find_param(self.params, b"rport")[0]

    @property
    def rport(self) -> int | None:
        value = _find_param(self.params, b"rport")[1]
        return int(value) if value else None

    @property
    def sent_by(self) -> bytes:
        """host[:port] as it would be written (brackets around IPv6)."""
        host = b"[" + self.host + b"]" if b":" in self.host else self.host
        return host if self.port is None else host + b":%d" % self.port


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...).
    `display_name` is the display name as written (quotes removed, escapes kept) or None;
    `uri` is always a `SipUri` (non-SIP schemes carry only scheme and raw); `params` are the
    header parameters (after the `>` or after an addr-spec), names lowercase, values raw."""

    display_name: bytes | None
    uri: SipUri
    params: Params
    raw: bytes

    @property
    def tag(self) -> bytes | None:
        return _find_param(self.params, b"tag")[1]

    def param(self, name: bytes) -> bytes | None:
        return _find_param(self.params, name)[1]

    def has_param(self, name: bytes) -> bool:
        return _find_param(self.params, name)[0]


@dataclass(frozen=True, slots=True)
class CSeq:
    """RFC 3261 §20.16: sequence number (32 bits) and method (case-sensitive, as received)."""

    number: int
    method: bytes


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


def parse_params(text: bytes, pos: int) -> Params:
    """Parse `*( SEMI generic-param )` from `text[pos:]` to its end (trailing LWS allowed)."""
    params: list[tuple[bytes, bytes | None]] = []
    end = len(text)
    match = _PARAM_RE.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            tail = _WS_RE.match(text, pos)
            if tail is not None and tail.end() == end:
                break
            raise _fail("malformed header parameters")
        params.append((m.group(1).lower(), m.group(2)))
        pos = m.end()
    return tuple(params)


def _check_ipv6(inner: bytes) -> None:
    # RFC 5954 corrected the RFC 3261 IPv6reference ABNF: only RFC 4291 text forms are valid,
    # so the three-colon form of RFC 5118 §4.10 is rejected (our pinned choice).
    try:
        ipaddress.IPv6Address(inner.decode("ascii"))
    except ValueError:
        raise _fail("invalid IPv6 reference") from None


def _check_host(host: bytes) -> bytes:
    """Validate a host as written; return it lowercase, IPv6 without brackets."""
    if host[:1] == b"[":
        inner = host[1:-1]
        _check_ipv6(inner)
        return inner.lower()
    if _HOSTNAME_RE.fullmatch(host) is None:
        raise _fail("invalid host")
    return host.lower()


def _check_port(port: bytes | None) -> int | None:
    if port is None:
        return None
    value = int(port)
    if value > 65535:
        raise _fail("port out of range")
    return value


def parse_uri(raw: bytes, *, max_bytes: int = 1024) -> SipUri:
    """Parse a URI. `sip:`/`sips:` must match RFC 3261 §19.1 exactly (an unbracketed IPv6
    host is an error, RFC 5118 §4.2; `[2001:db8::10:5070]` is a host without port, §4.3);
    other schemes are only checked to be an absoluteURI and recorded."""
    if len(raw) > max_bytes:
        raise _fail("URI too long")
    m = _SIP_URI_RE.fullmatch(raw)
    if m is None:
        scheme = _SCHEME_RE.match(raw)
        if scheme is not None and scheme.group(0)[:-1].lower() not in (b"sip", b"sips"):
            if _OTHER_URI_RE.fullmatch(raw) is None:
                raise _fail("malformed URI")
            return SipUri(scheme.group(0)[:-1].lower(), None, None, b"", None, (), (), raw)
        raise _fail("malformed SIP URI")
    if b"%" in raw and _BAD_ESCAPE_RE.search(raw) is not None:
        raise _fail("malformed escape in URI")
    scheme_b, user, password, host, port, params_raw, headers_raw = m.groups()
    params: Params = ()
    if params_raw:
        items = []
        for item in params_raw[1:].split(b";"):
            name, eq, value = item.partition(b"=")
            items.append((name.lower(), value if eq else None))
        params = tuple(items)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if headers_raw:
        hitems = []
        for item in headers_raw.split(b"&"):
            name, _, value = item.partition(b"=")
            hitems.append((name, value))
        headers = tuple(hitems)
    return SipUri(
        scheme_b.lower(),
        user,
        password,
        _check_host(host),
        _check_port(port),
        params,
        headers,
        raw,
    )


def _split_spans(value: bytes) -> list[tuple[int, int]]:
    """Spans of the comma-separated elements of `value` (stripped of LWS). An empty element
    (`a,,b`, a trailing comma) is an error; an empty value has no element."""
    if not value:
        return []
    if b'"' not in value and b"<" not in value:
        spans = []
        pos = 0
        for part in value.split(b","):
            start = pos
            end = pos + len(part)
            pos = end + 1
            stripped = part.strip(b" \t")
            if not stripped:
                raise _fail("empty element in a comma-separated list")
            lead = len(part) - len(part.lstrip(b" \t"))
            spans.append((start + lead, start + lead + len(stripped)))
            del end
        return spans
    spans = []
    pos = 0
    end = len(value)
    while True:
        m = _LIST_ITEM_RE.match(value, pos)
        if m is None:
            raise _fail("empty element in a comma-separated list")
        s, e = m.span()
        part = value[s:e]
        stripped = part.strip(b" \t")
        if not stripped:
            raise _fail("empty element in a comma-separated list")
        lead = len(part) - len(part.lstrip(b" \t"))
        spans.append((s + lead, s + lead + len(stripped)))
        if e >= end:
            return spans
        if value[e : e + 1] != b",":
            raise _fail("unbalanced quote or angle bracket in a list")
        pos = e + 1
        if pos >= end:
            raise _fail("empty element in a comma-separated list")


def split_list(value: bytes) -> list[bytes]:
    """Split a comma list, respecting quoted strings and <...> (RFC 3261 §7.3.1)."""
    return [value[s:e] for s, e in _split_spans(value)]


def list_spans(value: bytes) -> list[tuple[int, int]]:
    """Spans (start, end) of the elements of a comma list inside `value`."""
    return _split_spans(value)


def parse_via(value: bytes) -> Via:
    """Parse one Via value (not a list)."""
    m = _VIA_HEAD_RE.match(value)
    if m is None:
        raise _fail("malformed Via")
    name, version, transport, host, port = m.groups()
    params = parse_params(value, m.end())
    for key, pval in params:
        if key == b"rport":
            if pval is not None and (not pval.isdigit() or len(pval) > 5 or int(pval) > 65535):
                raise _fail("malformed rport")
        elif key == b"branch" and pval is not None and TOKEN_RE.fullmatch(pval) is None:
            raise _fail("malformed branch")
    return Via(
        name + b"/" + version,
        transport.upper(),
        _check_host(host),
        _check_port(port),
        params,
        value,
    )


def parse_via_values(value: bytes) -> list[Via]:
    """All Via values of one header field value (a comma list)."""
    vias = [parse_via(value[s:e]) for s, e in _split_spans(value)]
    if not vias:
        raise _fail("empty Via")
    return vias


def _unquote_display(quoted: bytes) -> bytes:
    return quoted[1:-1]


def parse_name_addr(value: bytes, *, max_uri_bytes: int = 1024) -> NameAddr:
    """Parse `( name-addr / addr-spec ) *( SEMI generic-param )` (RFC 3261 §20.10, §20.20).
    In the addr-spec form the URI ends at the first `;` (those are header parameters,
    RFC 4475 cparam01) and may not hold `,`, `?` or `;` (RFC 3261 §20: they need <>, regbadct);
    inside <> no whitespace is allowed (badaspec is rejected)."""
    m = _NAME_ADDR_RE.match(value)
    if m is not None:
        quoted, tokens, uri_raw = m.groups()
        display = _unquote_display(quoted) if quoted is not None else tokens
        pos = m.end()
    else:
        if b"<" in value or b'"' in value:
            raise _fail("malformed name-addr")
        a = _ADDR_SPEC_RE.match(value)
        if a is None:
            raise _fail("malformed addr-spec")
        uri_raw = a.group(0)
        display = None
        pos = a.end()
        if value[pos : pos + 1] not in (b";", b" ", b"\t", b""):
            raise _fail("addr-spec needs <> around ',' or '?'")
    uri = parse_uri(uri_raw, max_bytes=max_uri_bytes)
    params = parse_params(value, pos)
    return NameAddr(display, uri, params, value)


def parse_name_addr_list(value: bytes, *, max_uri_bytes: int = 1024) -> list[NameAddr]:
    return [
        parse_name_addr(value[s:e], max_uri_bytes=max_uri_bytes) for s, e in _split_spans(value)
    ]


def parse_cseq(value: bytes) -> CSeq:
    """RFC 3261 §20.16: `1*DIGIT LWS Method`; the number must fit in 32 bits (RFC 4475
    scalar02: 2^65 is a 400). The digit count is bounded before int()."""
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise _fail("malformed CSeq")
    number = int(m.group(1))
    if number > _MAX_32:
        raise _fail("CSeq number out of range")
    return CSeq(number, m.group(2))


# --- digest auth-params (RFC 3261 §25 credentials/challenge, RFC 7616 §3.4) ---

_AUTH_SCHEME_RE = re.compile(rb"[ \t]*([" + _TOKEN_CLASS + rb"]+)(?:[ \t]+|$)")
_AUTH_PARAM_RE = re.compile(
    rb"[ \t]*(["
    + _TOKEN_CLASS
    + rb"]+)[ \t]*=[ \t]*("
    + _QUOTED
    + rb"|["
    + _TOKEN_CLASS
    + rb"/:]+)[ \t]*(,|$)"
)
_QUOTED_PAIR_RE = re.compile(rb"\\(.)", re.S)


def _parse_auth(value: bytes, *, max_bytes: int) -> Credentials:
    if len(value) > max_bytes:
        raise _fail("authentication value too long")
    m = _AUTH_SCHEME_RE.match(value)
    if m is None:
        raise _fail("malformed authentication scheme")
    scheme = m.group(1)
    if scheme.lower() != b"digest":
        return Credentials(scheme, {})
    pos = m.end()
    end = len(value)
    params: dict[str, str] = {}
    if pos >= end:
        raise _fail("digest without parameters")
    while pos < end:
        p = _AUTH_PARAM_RE.match(value, pos)
        if p is None:
            raise _fail("malformed digest parameter")
        name = p.group(1).lower().decode("ascii")
        raw = p.group(2)
        if raw[:1] == b'"':
            raw = _QUOTED_PAIR_RE.sub(rb"\1", raw[1:-1])
        if name in params:
            raise _fail("duplicate digest parameter")
        params[name] = raw.decode("latin-1")
        pos = p.end()
        if p.group(3) == b"," and pos >= end:
            raise _fail("trailing comma in digest parameters")
    return Credentials(scheme, params)


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


def via_param_spans(element: bytes) -> tuple[int, list[tuple[bytes, int, int]]]:
    """For one Via value: the offset where its parameters start and, for each parameter, its
    lowercase name and the span of `;name[=value]` (leading LWS included). Used by edits."""
    m = _VIA_HEAD_RE.match(element)
    if m is None:
        raise _fail("malformed Via")
    pos = m.end()
    head_end = pos
    spans: list[tuple[bytes, int, int]] = []
    end = len(element)
    while pos < end:
        p = _PARAM_RE.match(element, pos)
        if p is None:
            break
        spans.append((p.group(1).lower(), pos, p.end()))
        pos = p.end()
    return head_end, spans
