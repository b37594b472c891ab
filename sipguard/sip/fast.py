"""The grammar of the parser's fast path, and the values built from its match.

Owns: `FAST_MESSAGE_RE`, a whole message of the common shape in one match, with the pieces of
the general grammar (`abnf`) minus what is rare (a strict subset of it), written for sre's cost
model; the order of its groups (`FAST_GROUPS`, checked at import); the patterns that read again
from where the match left off (`FAST_VIA_*`, `FAST_NEXT_VIA_RE`); and the values the parser
builds from the match without running a regex again (`MatchedVia`, `MatchedNameAddr`,
`matched_name_addr`). Never reads a message itself (`parser` does), never does I/O.

RFC 3261 §7 (message structure), §20 (headers), §25 (ABNF); RFC 3581 (rport).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sipguard.sip.abnf import CALL_ID_WORD, PORT, TOKEN_CLASS
from sipguard.sip.values import NameAddr, Via

__all__ = [
    "FAST_GROUPS",
    "FAST_MESSAGE_RE",
    "FAST_NEXT_VIA_RE",
    "FAST_VIA_LINES_RE",
    "FAST_VIA_SEP_RE",
    "FAST_VIA_VALUE_RE",
    "MatchedNameAddr",
    "MatchedVia",
    "compile_fast",
    "matched_name_addr",
]


def _ci(name: bytes) -> bytes:
    """`[Vv][Ii][Aa]` for b"via": case-insensitive without IGNORECASE (slower in sre)."""
    return b"".join(
        b"[%c%c]" % (c, c ^ 0x20) if 0x61 <= c <= 0x7A else re.escape(bytes([c])) for c in name
    )


# Written for sre's cost model: `(?:x|)` rather than `(?:x)?` and possessive `*+` repeats (a
# generic repeat allocates and saves the groups at every step), single-character classes in
# the loops. Each piece is the general grammar (`abnf`) minus what is rare and needs more than a
# regex: %-escapes and IPv6 references in URIs, URI passwords, LWS around ';' and '='.
# [^\r\n] spelled as ranges: sre tests a two-literal negated class char by char through a
# slow path, but a class of three or more runs through a bitmap (about twice as fast).
_F_LINE_CHAR = rb"[\x00-\x09\x0b\x0c\x0e-\xff]"
_F_TOKEN = rb"[" + TOKEN_CLASS + rb"]++"
_F_QUOTED_TEXT = rb'[^"\\\r\n]*+(?:\\' + _F_LINE_CHAR + rb'[^"\\\r\n]*+)*+'
_F_QUOTED = rb'"' + _F_QUOTED_TEXT + rb'"'  # = QUOTED, unrolled
_F_GEN = rb"(?:[" + TOKEN_CLASS + rb":]++|" + _F_QUOTED + rb"|\[[0-9A-Fa-f:.]++\])"
_F_PARAMS = rb"(?:;" + _F_TOKEN + rb"(?:=" + _F_GEN + rb"|))*+"
_F_USER = rb"[A-Za-z0-9\-_.!~*'()&=+$,;?/]++"
_F_USER_NS = rb"[A-Za-z0-9\-_.!~*'()&=+$/]++"
_F_PCHAR = rb"[A-Za-z0-9\-_.!~*'()/:&+$]"
_F_HCHAR = rb"[A-Za-z0-9\-_.!~*'()/?:+$]"
_F_SCHEME = rb"[Ss][Ii][Pp][Ss]?"
# = HOSTNAME (a '-' never last), written so that nothing backtracks: runs of '-' only
# where a hostname character follows
_F_HOST = rb"[A-Za-z0-9][A-Za-z0-9.]*+(?:-++[A-Za-z0-9.][A-Za-z0-9.]*+)*+"
# the top Via as usually written (transport upper case, host lower case): Via keeps them so,
# no case conversion when it is built; another case goes to the general path
_F_UPPER_TOKEN = rb"[A-Z0-9\-.!%*_+`'~]++"
_F_LOWER_HOST = rb"[a-z0-9][a-z0-9.]*+(?:-++[a-z0-9.][a-z0-9.]*+)*+"
_F_SIP_URI = (
    _F_SCHEME + rb":(?:" + _F_USER + rb"@|)" + _F_HOST + rb"(?::" + PORT + rb"|)(?:;"
    + _F_PCHAR + rb"++(?:=" + _F_PCHAR + rb"++|))*+"
)  # fmt: skip
_F_SIP_URI_H = (
    _F_SIP_URI + rb"(?:\?" + _F_HCHAR + rb"++=" + _F_HCHAR + rb"*+(?:&" + _F_HCHAR + rb"++="
    + _F_HCHAR + rb"*+)*+|)"
)  # fmt: skip
_F_OTHER_URI = rb"(?!" + _F_SCHEME + rb":)[A-Za-z][A-Za-z0-9+\-.]*+:[^\x00-\x20\x7f<>\"%\[]++"
_F_ADDR_SPEC = (
    _F_SCHEME + rb":(?:" + _F_USER_NS + rb"@|)" + _F_HOST + rb"(?::" + PORT + rb"|)|(?!"
    + _F_SCHEME + rb":)[A-Za-z][A-Za-z0-9+\-.]*+:[^\x00-\x20\x7f<>\";,?%\[]++"
)  # fmt: skip
_F_DISPLAY = _F_QUOTED + rb"|" + _F_TOKEN + rb"(?:[ \t]++" + _F_TOKEN + rb")*+"


def _f_name_addr() -> bytes:
    """name-addr / addr-spec with header parameters (Contact); without groups."""
    return (
        rb"(?:(?:" + _F_DISPLAY + rb"|)[ \t]*+<(?:" + _F_SIP_URI_H + rb"|" + _F_OTHER_URI
        + rb")>|" + _F_ADDR_SPEC + rb")" + _F_PARAMS
    )  # fmt: skip


def _f_from_to(p: bytes, cond: Callable[[bytes], bytes]) -> bytes:
    """From / To: a name-addr (the addr-spec form goes to the general path: one alternative
    less for the common form), groups `p` (the value), `pq` (a quoted display name without its
    quotes), `pn` (a display name of tokens), `pu` (the URI), `pp` (parameters) and `ptg` (the
    value of `tag=`, read on every message: captured so that reading it splits no parameter).
    A parameter named `tag` in another case, without a value, or twice goes to the general
    path (the tag is the first parameter of that name, RFC 3261 §19.3)."""
    tag = p + b"tg"
    params = (
        rb"(?:;(?:tag=" + cond(tag) + rb"(?!)|(?P<" + tag + rb">" + _F_GEN + rb"))|(?!"
        + _ci(b"tag") + rb"(?![" + TOKEN_CLASS + rb"]))" + _F_TOKEN + rb"(?:=" + _F_GEN
        + rb"|)))*+"
    )  # fmt: skip
    return (
        rb"(?P<" + p + rb">(?:\"(?P<" + p + rb"q>" + _F_QUOTED_TEXT + rb')"|(?P<' + p + rb"n>"
        + _F_TOKEN + rb"(?:[ \t]++" + _F_TOKEN + rb")*+)|)[ \t]*+<(?P<" + p + rb"u>"
        + _F_SIP_URI_H + rb"|" + _F_OTHER_URI + rb")>(?P<" + p + rb"p>" + params + rb"))"
    )  # fmt: skip


_F_RPORT = _ci(b"rport") + b"="
_F_VIA_PARAMS = (
    rb"(?:;(?:" + _F_RPORT + PORT + rb"|(?!" + _F_RPORT + rb")" + _F_TOKEN + rb"(?:=" + _F_GEN
    + rb"|)))*+"
)  # fmt: skip
_F_VIA_NC = (
    rb"SIP/2\.0/" + _F_TOKEN + rb"[ \t]++" + _F_HOST + rb"(?::" + PORT + rb"|)" + _F_VIA_PARAMS
)
# A Via value after the top one, as the fast match validated it (`Message.second_via` reads it
# again from where the match left off: the same possessive grammar, so the same end), and the
# separator of two values of a comma list.
FAST_VIA_VALUE_RE = re.compile(_F_VIA_NC)
FAST_VIA_SEP_RE = re.compile(rb"[ \t]*+,[ \t]*+")
# The next Via line of a message read on the fast path (where every Via line is spelled `Via:`).
FAST_NEXT_VIA_RE = re.compile(rb"\r\nVia:[ \t]*+")
# The value of every Via line after the top one (no trailing LWS on the fast path).
FAST_VIA_LINES_RE = re.compile(rb"\r\nVia:[ \t]*+([^\r]*+)")


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
        + PORT + rb"|(?!" + _F_RPORT + rb"|" + _ci(b"branch") + rb"=)" + _F_TOKEN + rb"(?:="
        + _F_GEN + rb"|)))*+"
    )  # fmt: skip
    top_via = (
        rb"(?P<via>SIP/2\.0/(?P<vt>" + _F_UPPER_TOKEN + rb")[ \t]++(?P<vh>" + _F_LOWER_HOST
        + rb")(?::(?P<vp>"
        + PORT + rb")|)(?P<vpar>" + via_params + rb"))(?:[ \t]*+,[ \t]*+" + _F_VIA_NC + rb")*+"
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
        + rb")[ \t]*:)[" + TOKEN_CLASS + rb"]*+[ \t]*+:" + _F_LINE_CHAR + rb"*+"
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
        + safe_first + rb"[" + TOKEN_CLASS + rb"]*+[ \t]*+:" + _F_LINE_CHAR + rb"*+"
        rb"|Via" + ws + cond(b"via") + more_vias + rb"|" + top_via + rb")"
        rb"|From" + ws + cond(b"f") + once + _f_from_to(b"f", cond) + rb")"
        rb"|To" + ws + cond(b"t") + once + _f_from_to(b"t", cond) + rb")"
        rb"|C(?:all-ID" + ws + cond(b"cid") + once + rb"(?P<cid>" + CALL_ID_WORD + rb"+(?:@"
        + CALL_ID_WORD + rb"+|))" + eol + rb")"
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
    "f", "fq", "fn", "fu", "fp", "ftg",  # From: value, quoted or token display name, URI,
    # params, tag
    "t", "tq", "tn", "tu", "tp", "ttg",  # To: the same
    "cid", "cn", "cm", "cl", "mf",  # Call-ID, CSeq number and method, Content-Length, Max-Forwards
)  # fmt: skip
_numbers = FAST_MESSAGE_RE.groupindex
if tuple(sorted(_numbers, key=lambda name: _numbers[name])) != FAST_GROUPS:
    raise RuntimeError("FAST_GROUPS does not list the groups of FAST_MESSAGE_RE in order")


class MatchedVia(Via):
    """A top Via read on the parser's fast path (built by `parse_message` from the match,
    which validated it): the same value as `Via(raw)`, with `branch` a plain attribute filled
    from the match (None when absent), since the fast grammar captures the one `branch=`
    parameter it admits."""

    __slots__ = ("branch",)

    branch: bytes | None  # an attribute where Via computes a property


class MatchedNameAddr(NameAddr):
    """A From or To read on the parser's fast path (built by `parse_message` from the match,
    which validated it): the same value as `NameAddr(raw)`, with `tag` a plain attribute filled
    from the match (None when absent), since the fast grammar captures the one `tag=` parameter
    it admits."""

    __slots__ = ("tag",)

    tag: bytes | None  # an attribute where NameAddr computes a property


_new_object = object.__new__


def matched_name_addr(
    display_name: bytes | None,
    uri: bytes,
    params: bytes,
    tag: bytes | None,
    raw: bytes,
    max_uri_bytes: int,
) -> MatchedNameAddr:
    """A From or To from parts the parser's fast match already validated: the same value as
    `NameAddr(raw)`, with no regex run again. `display_name` without its quotes."""
    addr: MatchedNameAddr = _new_object(MatchedNameAddr)
    addr.display_name = display_name
    addr.uri_raw = uri
    addr._params_raw = params
    addr.tag = tag
    addr.raw = raw
    addr._params = None
    addr._uri = None
    addr._uri_max = max_uri_bytes
    return addr
