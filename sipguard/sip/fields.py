"""Typed SIP header values, parsed from bytes on demand.

Owns: the RFC 3261 §25 grammar of the values sipguard reads (SIP/SIPS URIs, name-addr and
addr-spec with header parameters, Via, CSeq, comma lists, digest credentials and challenges) and
the value types they produce. Every function takes bytes and returns values or raises
`ParseError`; nothing else escapes. Never decodes wire bytes to str except the digest
auth-params (latin-1, lossless), never serialises a whole message, never does I/O.

Also the grammar of the parser's fast path, `FAST_MESSAGE_RE`: a whole message of the common
shape in one match, with the same pieces minus what is rare (a strict subset of this grammar),
the order of its groups (`FAST_GROUPS`, checked at import) and `matched_name_addr`, which builds
a From or To from them.

RFC 3261 §7.3.1 (header field format, comma lists), §19.1 (SIP URI), §20 (headers), §25 (ABNF);
RFC 3581 (rport); RFC 5118 and RFC 5954 (IPv6 references); RFC 7616 / RFC 3261 §22.4 (digest
auth-params).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

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

# --- grammar (RFC 3261 §25), compiled once ---

_TOKEN_CLASS = rb"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = rb"[" + _TOKEN_CLASS + rb"]+"
TOKEN_RE = re.compile(_TOKEN)
# qdtext per RFC 3261 §25 plus raw control bytes other than CR/LF: RFC 4475 §3.1.1.2 (intmeth)
# shows BEL/NUL/DEL in a display name; accepting them raw is harmless for a proxy that forwards
# the bytes, and the quoted string still ends only at an unescaped DQUOTE.
_QUOTED = rb'"(?:[^"\\\r\n]|\\[^\r\n])*"'
# gen-value = token / host / quoted-string (host may be an IPv6 reference, or unbracketed
# IPv6 as in Via received, RFC 5118 §4.5; hence ':' beside the token characters).
_GEN_VALUE = rb"(?:[" + _TOKEN_CLASS + rb":]+|" + _QUOTED + rb"|\[[0-9A-Fa-f:.]+\])"
_PARAM = rb"[ \t]*;[ \t]*(" + _TOKEN + rb")(?:[ \t]*=[ \t]*(" + _GEN_VALUE + rb"))?"
_PARAM_RE = re.compile(_PARAM)
# *( SEMI generic-param ) with the SWS RFC 3261 allows around SEMI and EQUAL.
_PARAMS = rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*" + _GEN_VALUE + rb")?)*"

# SIP URI (RFC 3261 §19.1.1, §25): user, password, hostport, uri-parameters, headers.
_USER = rb"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+"
_USER_NS = rb"[A-Za-z0-9\-_.!~*'()&=+$/%]+"  # addr-spec form: no ';', '?', ','
_PASSWORD = rb"[A-Za-z0-9\-_.!~*'()&=+$,%]*"
_PASSWORD_NC = rb"[A-Za-z0-9\-_.!~*'()&=+$%]*"
_IPV6REF = rb"\[[0-9A-Fa-f:.]+\]"
# hostname / IPv4: hostname characters, no leading '.' or '-'; exact IPv6 syntax is checked
# with ipaddress (RFC 5954), only when there are brackets.
_HOSTNAME = rb"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?"
_HOST = rb"(?:" + _HOSTNAME + rb"|" + _IPV6REF + rb")"
# port = 1*DIGIT, bounded to 0..65535 in the grammar itself so no range check is needed later.
_PORT = (
    rb"(?:[0-9]{1,4}(?![0-9])|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
_PCHAR = rb"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]"
_HCHAR = rb"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]"
_URI_HEADERS = _HCHAR + rb"+=" + _HCHAR + rb"*(?:&" + _HCHAR + rb"+=" + _HCHAR + rb"*)*"
_SIP_SCHEME = rb"[Ss][Ii][Pp][Ss]?"
_SIP_URI_RE = re.compile(
    rb"(" + _SIP_SCHEME + rb"):"
    rb"(?:(" + _USER + rb")(?::(" + _PASSWORD + rb"))?@)?"
    rb"(" + _HOST + rb")(?::(" + _PORT + rb"))?"
    rb"((?:;" + _PCHAR + rb"+(?:=" + _PCHAR + rb"+)?)*)"
    rb"(?:\?(" + _URI_HEADERS + rb"))?"
)
_SIP_URI_NC = (
    _SIP_SCHEME + rb":(?:" + _USER + rb"(?::" + _PASSWORD + rb")?@)?" + _HOST
    + rb"(?::" + _PORT + rb")?(?:;" + _PCHAR + rb"+(?:=" + _PCHAR + rb"+)?)*(?:\?" + _URI_HEADERS
    + rb")?"
)  # fmt: skip
_SIP_ADDR_SPEC_NC = (
    _SIP_SCHEME + rb":(?:" + _USER_NS + rb"(?::" + _PASSWORD_NC + rb")?@)?" + _HOST
    + rb"(?::" + _PORT + rb")?"
)  # fmt: skip
# RFC 3261 §19.1.1 absoluteURI of another scheme: visible characters, not sip/sips (a sip URI
# that failed its grammar must not slip through as "another scheme").
_OTHER_URI_NC = rb"(?!" + _SIP_SCHEME + rb":)[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\x7f<>\"]+"
_OTHER_ADDR_SPEC_NC = (
    rb"(?!" + _SIP_SCHEME + rb":)[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\x7f<>\";,?]+"
)
_OTHER_URI_RE = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*):[^\x00-\x20\x7f<>\"]+")
_BAD_ESCAPE_RE = re.compile(rb"%(?![0-9A-Fa-f]{2})")

# One name-addr (RFC 3261 §20.10): [display-name] LAQUOT addr-spec RAQUOT *(SEMI param).
# Inside <> no whitespace is allowed (RFC 4475 badaspec is rejected: our pinned choice).
_NAME_ADDR_RE = re.compile(
    rb"(?:(" + _QUOTED + rb")|(" + _TOKEN + rb"(?:[ \t]+" + _TOKEN + rb")*))?[ \t]*"
    rb"<(" + _SIP_URI_NC + rb"|" + _OTHER_URI_NC + rb")>(" + _PARAMS + rb")[ \t]*"
)
# addr-spec without <>: the URI may not hold ';', '?' or ',' (RFC 3261 §20; RFC 4475 regbadct),
# so what follows the first ';' are header parameters (RFC 4475 cparam01).
_ADDR_SPEC_RE = re.compile(
    rb"(" + _SIP_ADDR_SPEC_NC + rb"|" + _OTHER_ADDR_SPEC_NC + rb")(" + _PARAMS + rb")[ \t]*"
)

# Via (RFC 3261 §20.42): sent-protocol LWS sent-by *( SEMI via-params ), LWS around '/' and ':'.
_VIA_HEAD = (
    rb"(" + _TOKEN + rb")[ \t]*/[ \t]*(" + _TOKEN + rb")[ \t]*/[ \t]*(" + _TOKEN + rb")[ \t]+"
    rb"(" + _HOST + rb")(?:[ \t]*:[ \t]*(" + _PORT + rb"))?"
)
_VIA_HEAD_RE = re.compile(_VIA_HEAD)
_VIA_RE = re.compile(_VIA_HEAD + rb"(" + _PARAMS + rb")[ \t]*")
_CSEQ_RE = re.compile(rb"([0-9]{1,10})[ \t]+(" + _TOKEN + rb")")
# One list element: quoted strings and <...> may hold commas (RFC 3261 §7.3.1).
_LIST_ITEM_RE = re.compile(rb'(?:"(?:[^"\\]|\\.)*"|<[^>]*>|[^,"<])+', re.S)

# --- fast-path grammar (used by the parser's fast path, see parser.py) ---

# RFC 3261 §25 callid = word [ "@" word ]
_CALL_ID_WORD = rb"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"


def _ci(name: bytes) -> bytes:
    """`[Vv][Ii][Aa]` for b"via": case-insensitive without IGNORECASE (slower in sre)."""
    return b"".join(
        b"[%c%c]" % (c, c ^ 0x20) if 0x61 <= c <= 0x7A else re.escape(bytes([c])) for c in name
    )


# Written for sre's cost model: `(?:x|)` rather than `(?:x)?` and possessive `*+` repeats (a
# generic repeat allocates and saves the groups at every step), single-character classes in
# the loops. Each piece is the general grammar above minus what is rare and needs more than a
# regex: %-escapes and IPv6 references in URIs, URI passwords, LWS around ';' and '='.
# [^\r\n] spelled as ranges: sre tests a two-literal negated class char by char through a
# slow path, but a class of three or more runs through a bitmap (about twice as fast).
_F_LINE_CHAR = rb"[\x00-\x09\x0b\x0c\x0e-\xff]"
_F_TOKEN = rb"[" + _TOKEN_CLASS + rb"]++"
_F_QUOTED_TEXT = rb'[^"\\\r\n]*+(?:\\' + _F_LINE_CHAR + rb'[^"\\\r\n]*+)*+'
_F_QUOTED = rb'"' + _F_QUOTED_TEXT + rb'"'  # = _QUOTED, unrolled
_F_GEN = rb"(?:[" + _TOKEN_CLASS + rb":]++|" + _F_QUOTED + rb"|\[[0-9A-Fa-f:.]++\])"
_F_PARAMS = rb"(?:;" + _F_TOKEN + rb"(?:=" + _F_GEN + rb"|))*+"
_F_USER = rb"[A-Za-z0-9\-_.!~*'()&=+$,;?/]++"
_F_USER_NS = rb"[A-Za-z0-9\-_.!~*'()&=+$/]++"
_F_PCHAR = rb"[A-Za-z0-9\-_.!~*'()/:&+$]"
_F_HCHAR = rb"[A-Za-z0-9\-_.!~*'()/?:+$]"
_F_SCHEME = rb"[Ss][Ii][Pp][Ss]?"
# = _HOSTNAME (a '-' never last), written so that nothing backtracks: runs of '-' only
# where a hostname character follows
_F_HOST = rb"[A-Za-z0-9][A-Za-z0-9.]*+(?:-++[A-Za-z0-9.][A-Za-z0-9.]*+)*+"
# the top Via as usually written (transport upper case, host lower case): Via keeps them so,
# no case conversion when it is built; another case goes to the general path
_F_UPPER_TOKEN = rb"[A-Z0-9\-.!%*_+`'~]++"
_F_LOWER_HOST = rb"[a-z0-9][a-z0-9.]*+(?:-++[a-z0-9.][a-z0-9.]*+)*+"
_F_SIP_URI = (
    _F_SCHEME + rb":(?:" + _F_USER + rb"@|)" + _F_HOST + rb"(?::" + _PORT + rb"|)(?:;"
    + _F_PCHAR + rb"++(?:=" + _F_PCHAR + rb"++|))*+"
)  # fmt: skip
_F_SIP_URI_H = (
    _F_SIP_URI + rb"(?:\?" + _F_HCHAR + rb"++=" + _F_HCHAR + rb"*+(?:&" + _F_HCHAR + rb"++="
    + _F_HCHAR + rb"*+)*+|)"
)  # fmt: skip
_F_OTHER_URI = rb"(?!" + _F_SCHEME + rb":)[A-Za-z][A-Za-z0-9+\-.]*+:[^\x00-\x20\x7f<>\"%\[]++"
_F_ADDR_SPEC = (
    _F_SCHEME + rb":(?:" + _F_USER_NS + rb"@|)" + _F_HOST + rb"(?::" + _PORT + rb"|)|(?!"
    + _F_SCHEME + rb":)[A-Za-z][A-Za-z0-9+\-.]*+:[^\x00-\x20\x7f<>\";,?%\[]++"
)  # fmt: skip
_F_DISPLAY = _F_QUOTED + rb"|" + _F_TOKEN + rb"(?:[ \t]++" + _F_TOKEN + rb")*+"


def _f_name_addr() -> bytes:
    """name-addr / addr-spec with header parameters (Contact); without groups."""
    return (
        rb"(?:(?:" + _F_DISPLAY + rb"|)[ \t]*+<(?:" + _F_SIP_URI_H + rb"|" + _F_OTHER_URI
        + rb")>|" + _F_ADDR_SPEC + rb")" + _F_PARAMS
    )  # fmt: skip


def _f_from_to(p: bytes) -> bytes:
    """From / To: a name-addr (the addr-spec form goes to the general path: one alternative
    less for the common form), groups `p` (the value), `pq` (a quoted display name without its
    quotes), `pn` (a display name of tokens), `pu` (the URI) and `pp` (parameters)."""
    return (
        rb"(?P<" + p + rb">(?:\"(?P<" + p + rb"q>" + _F_QUOTED_TEXT + rb')"|(?P<' + p + rb"n>"
        + _F_TOKEN + rb"(?:[ \t]++" + _F_TOKEN + rb")*+)|)[ \t]*+<(?P<" + p + rb"u>"
        + _F_SIP_URI_H + rb"|" + _F_OTHER_URI + rb")>(?P<" + p + rb"p>" + _F_PARAMS + rb"))"
    )  # fmt: skip


_F_RPORT = _ci(b"rport") + b"="
_F_VIA_PARAMS = (
    rb"(?:;(?:" + _F_RPORT + _PORT + rb"|(?!" + _F_RPORT + rb")" + _F_TOKEN + rb"(?:=" + _F_GEN
    + rb"|)))*+"
)  # fmt: skip
_F_VIA_NC = (
    rb"SIP/2\.0/" + _F_TOKEN + rb"[ \t]++" + _F_HOST + rb"(?::" + _PORT + rb"|)" + _F_VIA_PARAMS
)
# A Via value after the top one, as the fast match validated it (`Message.second_via` reads it
# again from where the match left off: the same possessive grammar, so the same end), and the
# separator of two values of a comma list.
FAST_VIA_VALUE_RE = re.compile(_F_VIA_NC)
FAST_VIA_SEP_RE = re.compile(rb"[ \t]*+,[ \t]*+")
# The next Via line of a message read on the fast path (where every Via line is spelled `Via:`).
FAST_NEXT_VIA_RE = re.compile(rb"\r\nVia:[ \t]*+")


def _token_class_without(first: bytes) -> bytes:
    chars = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~")
    return b"[" + b"".join(re.escape(bytes([c])) for c in sorted(chars - set(first))) + b"]"


def _f_message(cond: Callable[[bytes], bytes]) -> bytes:
    """Start line and every header line up to the empty line, in one match. The values that
    decide acceptance are checked in place, each up to the end of its line: the
    Request-URI, every Via, From, To, Call-ID, CSeq (its method must be the request's),
    Max-Forwards, Content-Length and every Contact. `cond(name)` opens a conditional on group
    `name`."""
    # the top Via captures `branch=` (exact case, the common spelling) so that reading the
    # branch splits no parameter; another spelling of it goes to the general path
    via_params = (
        rb"(?:;(?:branch=" + cond(b"vbr") + rb"(?!)|(?P<vbr>" + _F_GEN + rb"))|" + _F_RPORT
        + _PORT + rb"|(?!" + _F_RPORT + rb"|" + _ci(b"branch") + rb"=)" + _F_TOKEN + rb"(?:="
        + _F_GEN + rb"|)))*+"
    )  # fmt: skip
    top_via = (
        rb"(?P<via>SIP/2\.0/(?P<vt>" + _F_UPPER_TOKEN + rb")[ \t]++(?P<vh>" + _F_LOWER_HOST
        + rb")(?::(?P<vp>"
        + _PORT + rb")|)(?P<vpar>" + via_params + rb"))(?:[ \t]*+,[ \t]*+" + _F_VIA_NC + rb")*+"
    )  # fmt: skip
    more_vias = _F_VIA_NC + rb"(?:[ \t]*+,[ \t]*+" + _F_VIA_NC + rb")*+"
    contacts = rb"(?:\*|" + _f_name_addr() + rb"(?:[ \t]*+,[ \t]*+" + _f_name_addr() + rb")*+)"
    # any other header: its name must not be another spelling of a header read here (compact
    # form, other case), checked only against the names sharing its first letter
    by_letter: dict[int, list[bytes]] = {}
    for name in (b"via", b"from", b"to", b"call-id", b"cseq", b"max-forwards",
                 b"content-length", b"contact", b"v", b"f", b"t", b"i", b"l", b"m"):  # fmt: skip
        by_letter.setdefault(name[0], []).append(name[1:])
    risky = b"".join(
        rb"|" + _ci(bytes([letter])) + rb"(?!(?:" + rb"|".join(_ci(rest) for rest in rests)
        + rb")[ \t]*:)[" + _TOKEN_CLASS + rb"]*+[ \t]*+:" + _F_LINE_CHAR + rb"*+"
        for letter, rests in by_letter.items()
    )  # fmt: skip
    ws = rb":[ \t]*+"
    eol = rb"(?=\r)"
    once = rb"(?!)|"
    # most header lines are none of the headers read here: a name whose first character no
    # such header name (any spelling) starts with needs no look-ahead
    safe_first = _token_class_without(b"VvFfTtIiLlMmCc")
    return (
        rb"(?:SIP/2\.0 (?P<status>[1-6][0-9][0-9]) (?P<reason>[^\x00-\x08\x0a-\x1f\x7f]*+)"
        rb"|(?P<method>" + _F_TOKEN + rb") (?P<ruri>" + _F_SIP_URI + rb"|" + _F_OTHER_URI
        + rb") SIP/2\.0)"
        rb"(?:\r\n(?:"
        + safe_first + rb"[" + _TOKEN_CLASS + rb"]*+[ \t]*+:" + _F_LINE_CHAR + rb"*+"
        rb"|Via" + ws + cond(b"via") + more_vias + rb"|" + top_via + rb")"
        rb"|From" + ws + cond(b"f") + once + _f_from_to(b"f") + rb")"
        rb"|To" + ws + cond(b"t") + once + _f_from_to(b"t") + rb")"
        rb"|C(?:all-ID" + ws + cond(b"cid") + once + rb"(?P<cid>" + _CALL_ID_WORD + rb"+(?:@"
        + _CALL_ID_WORD + rb"+|))" + eol + rb")"
        rb"|Seq" + ws + cond(b"cn") + once + rb"(?P<cn>[0-9]{1,9}+)[ \t]++(?P<cm>"
        + cond(b"method") + rb"(?P=method)|" + _F_TOKEN + rb"))" + eol + rb")"
        rb"|ont(?:ent-(?:Length" + ws + cond(b"cl") + once + rb"(?P<cl>0|[1-9][0-9]{0,8}+)"
        + eol + rb")|Type[ \t]*+:" + _F_LINE_CHAR + rb"*+)"  # common, and not a header read here
        rb"|act" + ws + contacts + rb"))"
        rb"|Max-Forwards" + ws + cond(b"mf") + once + rb"(?P<mf>[0-9]{1,2}|1[0-9][0-9]"
        rb"|2[0-4][0-9]|25[0-5])" + eol + rb")"
        + risky
        + rb"))*+\r\n\r\n"
        + cond(b"via") + rb"|(?!))" + cond(b"f") + rb"|(?!))" + cond(b"t") + rb"|(?!))"
        + cond(b"cid") + rb"|(?!))" + cond(b"cn") + rb"|(?!))"
    )  # fmt: skip


def compile_fast(build: Callable[[Callable[[bytes], bytes]], bytes]) -> re.Pattern[bytes]:
    # A conditional may refer to a group defined later in the pattern only by number: compile
    # once with plain groups to learn the numbers, then with the conditionals.
    numbers = re.compile(build(lambda name: b"(?:")).groupindex
    return re.compile(build(lambda name: b"(?(%d)" % numbers[name.decode()]))


FAST_MESSAGE_RE = compile_fast(_f_message)
# The groups of a fast match in number order: the parser reads them all with ONE `m.groups()`
# (a tuple unpacked in place costs a fraction of reading twenty groups one by one).
FAST_GROUPS = (
    "status", "reason", "method", "ruri",  # start line
    "via", "vt", "vh", "vp", "vpar", "vbr",  # top Via: value, transport, host, port, params, branch
    "f", "fq", "fn", "fu", "fp",  # From: value, quoted or token display name, URI, params
    "t", "tq", "tn", "tu", "tp",  # To: the same
    "cid", "cn", "cm", "cl", "mf",  # Call-ID, CSeq number and method, Content-Length, Max-Forwards
)  # fmt: skip
_numbers = FAST_MESSAGE_RE.groupindex
if tuple(sorted(_numbers, key=lambda name: _numbers[name])) != FAST_GROUPS:
    raise RuntimeError("FAST_GROUPS does not list the groups of FAST_MESSAGE_RE in order")


_MAX_32 = 0xFFFFFFFF
_new_tuple = tuple.__new__

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


def _parse_params(raw: bytes) -> Params:
    """Split an already validated `*( SEMI generic-param )` section."""
    if not raw:
        return ()
    return tuple([(name.lower(), value or None) for name, value in _PARAM_RE.findall(raw)])


def _check_ipv6(inner: bytes) -> None:
    # RFC 5954 corrected the RFC 3261 IPv6reference ABNF: only RFC 4291 text forms are valid,
    # so the three-colon form of RFC 5118 §4.10 is rejected (our pinned choice).
    try:
        ipaddress.IPv6Address(inner.decode("ascii"))
    except ValueError:
        raise _fail("invalid IPv6 reference") from None


def _host(host: bytes) -> bytes:
    """Host as written (already matched by _HOST) -> lowercase, IPv6 without brackets."""
    if host[:1] == b"[":
        inner = host[1:-1]
        _check_ipv6(inner)
        return inner.lower()
    return host.lower()


def _port(port: bytes | None) -> int | None:
    # the grammar (_PORT) already bounds the value to 0..65535
    return None if port is None else int(port)


def _check_uri_extras(uri: bytes) -> None:
    """What the URI regexes leave out: %HH escapes, IPv6 syntax, port range."""
    if uri.find(b"%") >= 0 and _BAD_ESCAPE_RE.search(uri) is not None:
        raise _fail("malformed escape in URI")
    if uri.find(b"[") >= 0:
        m = _SIP_URI_RE.fullmatch(uri)
        if m is not None:
            _host(m.group(4))


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
        return _find_param(self.params, name)[1]

    def has_param(self, name: bytes) -> bool:
        return _find_param(self.params, name)[0]


def parse_uri(raw: bytes, *, max_bytes: int = 1024) -> SipUri:
    """Parse a URI. `sip:`/`sips:` must match RFC 3261 §19.1 exactly (an unbracketed IPv6
    host is an error, RFC 5118 §4.2; `[2001:db8::10:5070]` is a host without port, §4.3;
    escapes must be %HH); other schemes are only checked to be an absoluteURI and recorded."""
    if len(raw) > max_bytes:
        raise _fail("URI too long")
    m = _SIP_URI_RE.fullmatch(raw)
    if m is None:
        other = _OTHER_URI_RE.fullmatch(raw)
        if other is None or other.group(1).lower() in (b"sip", b"sips"):
            raise _fail("malformed URI")
        return SipUri(other.group(1).lower(), None, None, b"", None, (), (), raw)
    if raw.find(b"%") >= 0 and _BAD_ESCAPE_RE.search(raw) is not None:
        raise _fail("malformed escape in URI")
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
    return SipUri(scheme.lower(), user, password, _host(host), _port(port), params, headers, raw)


def check_request_uri(raw: bytes, max_bytes: int) -> None:
    """Validate a Request-URI without building it: a sip/sips URI per §19.1 without URI
    headers (RFC 4475 escruri), or an absoluteURI of another scheme (the core answers 416)."""
    if len(raw) > max_bytes:
        raise _fail("URI too long")
    m = _SIP_URI_RE.fullmatch(raw)
    if m is None:
        other = _OTHER_URI_RE.fullmatch(raw)
        if other is None or other.group(1).lower() in (b"sip", b"sips"):
            raise _fail("malformed Request-URI")
        return
    if m.group(7) is not None:
        raise _fail("headers in the Request-URI")
    if raw.find(b"%") >= 0 and _BAD_ESCAPE_RE.search(raw) is not None:
        raise _fail("malformed escape in URI")
    host = m.group(4)
    if host[:1] == b"[":
        _host(host)


class Via:
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
        "_params",
        "_params_raw",
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
            raise _fail("malformed Via")
        name, version, transport, host, port, params = m.groups()
        self.protocol = name + b"/" + version
        self.transport = transport.upper()
        self.host = _host(host)
        self.port = None if port is None else int(port)
        self.raw = value
        self._params_raw = params
        self._params: Params | None = None
        self._branch: bytes | None = None
        if params.find(b"=") >= 0 and params.lower().find(b"rport") >= 0:
            # validate now so that the rport property never raises (RFC 3581: 1*DIGIT)
            rport = self.param(b"rport")
            if rport is not None and (not rport.isdigit() or len(rport) > 5 or int(rport) > 65535):
                raise _fail("malformed rport")

    @property
    def params(self) -> Params:
        params = self._params
        if params is None:
            params = self._params = _parse_params(self._params_raw)
        return params

    def param(self, name: bytes) -> bytes | None:
        return _find_param(self.params, name)[1]

    def has_param(self, name: bytes) -> bool:
        return _find_param(self.params, name)[0]

    @property
    def branch(self) -> bytes | None:
        branch = self._branch  # known without splitting the parameters (fast path)
        if branch is not None:
            return branch
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


class MatchedVia(Via):
    """A top Via read on the parser's fast path (built by `parse_message` from the match,
    which validated it): the same value as `Via(raw)`, with `branch` a plain attribute filled
    from the match (None when absent), since the fast grammar captures the one `branch=`
    parameter it admits."""

    __slots__ = ("branch",)

    branch: bytes | None  # an attribute where Via computes a property


class NameAddr:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...),
    validated when built; the URI and the parameters are split on first use.

    `display_name`: as written (quotes removed, escapes kept) or None; `uri`: a `SipUri`
    (non-SIP schemes carry only scheme and raw); `params`: header parameters (after `>` or
    after an addr-spec), names lowercase, values raw; `raw`: the value as received (unfolded).
    Effectively immutable (slots class for speed, see `Via`)."""

    __slots__ = ("_params", "_params_raw", "_uri", "_uri_max", "display_name", "raw", "uri_raw")

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
                raise _fail("malformed name-addr or addr-spec")
            uri, params = m.groups()
            self.display_name = None
        if len(uri) > max_uri_bytes:
            raise _fail("URI too long")
        if uri.find(b"%") >= 0 or uri.find(b"[") >= 0:
            _check_uri_extras(uri)
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
    def params(self) -> Params:
        params = self._params
        if params is None:
            params = self._params = _parse_params(self._params_raw)
        return params

    @property
    def tag(self) -> bytes | None:
        return _find_param(self.params, b"tag")[1]

    def param(self, name: bytes) -> bytes | None:
        return _find_param(self.params, name)[1]

    def has_param(self, name: bytes) -> bool:
        return _find_param(self.params, name)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameAddr) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return (
            f"NameAddr(display_name={self.display_name!r}, uri={self.uri_raw!r}, "
            f"params={self.params!r})"
        )


_new_object = object.__new__


def matched_name_addr(
    display_name: bytes | None, uri: bytes, params: bytes, raw: bytes, max_uri_bytes: int
) -> NameAddr:
    """A NameAddr from parts the parser's fast match already validated (From, To): the same
    value as `NameAddr(raw)`, with no regex run again. `display_name` without its quotes."""
    addr: NameAddr = _new_object(NameAddr)
    addr.display_name = display_name
    addr.uri_raw = uri
    addr._params_raw = params
    addr.raw = raw
    addr._params = None
    addr._uri = None
    addr._uri_max = max_uri_bytes
    return addr


class CSeq(NamedTuple):
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


def _split_spans(value: bytes) -> list[tuple[int, int]]:
    """Spans of the comma-separated elements of `value` (stripped of LWS). An empty element
    (`a,,b`, a trailing comma) is an error; an empty value has no element."""
    if not value:
        return []
    spans = []
    if value.find(b'"') < 0 and value.find(b"<") < 0:
        pos = 0
        for part in value.split(b","):
            stripped = part.strip(b" \t")
            if not stripped:
                raise _fail("empty element in a comma-separated list")
            lead = pos + len(part) - len(part.lstrip(b" \t"))
            spans.append((lead, lead + len(stripped)))
            pos += len(part) + 1
        return spans
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
        lead = s + len(part) - len(part.lstrip(b" \t"))
        spans.append((lead, lead + len(stripped)))
        if e >= end:
            return spans
        if value[e : e + 1] != b",":
            raise _fail("unbalanced quote or angle bracket in a list")
        pos = e + 1
        if pos >= end:
            raise _fail("empty element in a comma-separated list")


def split_list(value: bytes) -> list[bytes]:
    """Split a comma list, respecting quoted strings and <...> (RFC 3261 §7.3.1)."""
    if value.find(b",") < 0:
        stripped = value.strip(b" \t")
        return [stripped] if stripped else []
    return [value[s:e] for s, e in _split_spans(value)]


def list_spans(value: bytes) -> list[tuple[int, int]]:
    """Spans (start, end) of the elements of a comma list inside `value`."""
    return _split_spans(value)


def parse_via(value: bytes) -> Via:
    """Parse one Via value (not a list)."""
    return Via(value)


def parse_via_values(value: bytes) -> list[Via]:
    """All Via values of one header field value (a comma list)."""
    if value.find(b",") < 0:
        return [Via(value)]
    vias = [Via(part) for part in split_list(value)]
    if not vias:
        raise _fail("empty Via")
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
        raise _fail("malformed CSeq")
    number = int(m.group(1))
    if number > _MAX_32:
        raise _fail("CSeq number out of range")
    return _new_tuple(CSeq, (number, m.group(2)))


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


# --- digest auth-params (RFC 3261 §25 credentials/challenge, RFC 7616 §3.4) ---

_AUTH_SCHEME_RE = re.compile(rb"[ \t]*([" + _TOKEN_CLASS + rb"]+)(?:[ \t]+|$)")
# The auth-params are read from the value decoded as latin-1 (one octet, one character, so
# offsets and octets are kept; `Credentials.params` is str) in ONE findall instead of a Python
# loop of matches: each item is `auth-param` (RFC 3261 §25: LWS around '=' and ','; a value
# is a quoted-string or a token that may hold '/' and ':' as real UAs write `uri=sip:...`
# unquoted) followed by its separator, ',' or the end; where an auth-param does not start,
# the last alternative takes the REST of the value as `junk` (one character would let findall
# try again at every following position: quadratic on a long malformed value). So findall
# covers every character, and the value is well formed exactly when no item is junk and the
# last item ends at the end.
_AUTH_TOKEN_CLASS = _TOKEN_CLASS.decode("ascii")
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
        raise _fail("authentication value too long")
    m = _AUTH_SCHEME_RE.match(value)
    if m is None:
        raise _fail("malformed authentication scheme")
    scheme = m.group(1)
    if scheme.lower() != b"digest":
        return Credentials(scheme, {})
    pos = m.end()
    if pos >= len(value):
        raise _fail("digest without parameters")
    items = _AUTH_ITEM_RE.findall(value.decode("latin-1"), pos)
    params: dict[str, str] = {}
    for name, quoted, token, _, junk in items:
        if junk:
            raise _fail("malformed digest parameter")
        # a token never holds a backslash; a quoted-string holds one only in a quoted-pair,
        # whose escape is resolved (RFC 3261 §25) -- the substitution only when there is one
        if quoted:
            params[name.lower()] = (
                _QUOTED_PAIR_RE.sub(_unquote, quoted) if "\\" in quoted else quoted
            )
        else:
            params[name.lower()] = token  # an empty quoted-string gives "" as well
    if items[-1][3]:
        raise _fail("trailing comma in digest parameters")
    if len(params) != len(items):
        raise _fail("duplicate digest parameter")
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
