"""Parsing one SIP message (one UDP datagram, or one frame cut by `StreamFramer`).

Owns: `parse_message`, the strict RFC 3261 reading of the start line, the header section and the
Content-Length framing of a datagram; the error for a request it refuses carries the headers that
`recovery.recover_headers` can still read, to answer it. Raises `ParseError` (or its subclasses
`MessageTooLarge`, `VersionNotSupported`) and nothing else, whatever the input. Never decodes to
str, never re-serialises, never does I/O.

Two paths. The fast path reads a message of the common shape in ONE regex match
(`fast.FAST_MESSAGE_RE`): start line, every header line, and in place the values that decide
whether the message is acceptable at all (Request-URI, Via, From, To, Call-ID, CSeq,
Max-Forwards, Content-Length, Contact). The message keeps the match; typed values are built
from its groups when read, and the header index only when a generic accessor needs it. What
the fast path does not match goes to the general path: one `findall` over the header block, a
cache from the header name as received to its canonical key, an index key -> header positions,
and each deciding value parsed by `values`. The fast path accepts a strict subset of what the
general path accepts, with the same values (tests/unit/sip/test_fast_path.py compares them).

RFC 3261 §7.1-§7.5 (start line, headers, folding, leading CRLF), §7.3.3 (compact forms),
§8.1.1 and §8.2.2 (mandatory headers), §18.3 (Content-Length on datagrams), §20.14, §20.16,
§20.22, §25 (grammar); RFC 4475 and RFC 5118 (torture cases).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sipguard.errors import MessageTooLarge, ParseError, VersionNotSupported
from sipguard.sip.abnf import CALL_ID_WORD, TOKEN
from sipguard.sip.fast import FAST_MESSAGE_RE, MatchedVia, matched_name_addr
from sipguard.sip.headers import Header
from sipguard.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipguard.sip.message import (
    DEFAULT_MAX_FORWARDS,
    Message,
    Request,
    Response,
    parse_max_forwards,
)
from sipguard.sip.names import HEADER_RE, index_keys, key_of
from sipguard.sip.recovery import recover_headers
from sipguard.sip.uri import check_request_uri
from sipguard.sip.values import CSeq, NameAddr, parse_cseq, parse_via_values

__all__ = ["parse_message", "parse_message_general"]

_MANDATORY = frozenset({b"via", b"from", b"to", b"call-id", b"cseq"})
_KNOWN_METHODS = frozenset(
    {
        b"INVITE",
        b"ACK",
        b"BYE",
        b"CANCEL",
        b"OPTIONS",
        b"REGISTER",
        b"PRACK",
        b"SUBSCRIBE",
        b"NOTIFY",
        b"PUBLISH",
        b"INFO",
        b"REFER",
        b"MESSAGE",
        b"UPDATE",
    }
)
# RFC 3261 §7.3.1 / §20: headers that may appear once only (RFC 4475 multi01, mcl01).
_SINGLE = (b"to", b"from", b"call-id", b"cseq", b"max-forwards", b"content-length")
_VERSION_RE = re.compile(rb"[Ss][Ii][Pp]/[0-9]{1,5}\.[0-9]{1,5}")
_STATUS_RE = re.compile(
    rb"([Ss][Ii][Pp]/[0-9]{1,5}\.[0-9]{1,5}) ([0-9]{3}) ([^\x00-\x08\x0a-\x1f\x7f]*)"
)
TOKEN_RE = re.compile(TOKEN)
_CALL_ID_RE = re.compile(CALL_ID_WORD + rb"(?:@" + CALL_ID_WORD + rb")?")

# A header block is matched by `HEADER_RE` (names.py) line by line: a line the pattern does not
# match (no colon, `To\x01:`, a name that is not a token, a folded continuation) makes the
# number of matches differ from the number of lines; bare CR/LF are caught by counting them.

# --- fast path (common case first) ---------------------------------------------------------
#
# `FAST_MESSAGE_RE` (grammar in fast.py) accepts a strict SUBSET of what the general parser
# accepts, with the same meaning: anything it does not match (folding, compact or odd-case
# names of the deciding headers, a space before a colon, trailing whitespace, %-escapes, IPv6
# references or passwords in URIs, LWS around ';', a second header that must be single...) goes
# to the general parser, which decides between a valid message and the error. Near a limit
# (header section longer than `limits.fast_path_bytes`) the general parser measures too.
# The header lines are a possessive repetition: once a line is read nothing backtracks into it,
# so a value read only in part makes the whole match fail (the general path then reads the
# message) and the match stays linear in the input. The fast path is also the common shape only:
# From/To as name-addr, the top Via with an upper-case transport and a lower-case host.

_new = object.__new__
_new_tuple = tuple.__new__
# The usual SIP ports (RFC 3261 §19.1.2, §26.2): a look-up costs less than int(bytes).
_port_of = {b"%d" % port: port for port in (5060, 5061, 5062, 5063, 5064, 5065, 5070, 5080)}.get


_fast_match = FAST_MESSAGE_RE.match


def parse_message(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one SIP message from one datagram (or one frame from `StreamFramer`).

    Octets after Content-Length are ignored (RFC 3261 §18.3, RFC 4475 dblreq); a body shorter
    than Content-Length is a 400; without Content-Length the body is the rest of the datagram.
    A ParseError for a request carries `routable=True` and `headers` (a `RecoveredHeaders`)
    when Via, From, To, Call-ID and CSeq could still be read; a response never does."""
    if type(data) is not bytes:
        data = bytes(data)
    # Fast path, inlined (a call costs as much as several checks here). A message with leading
    # CRLFs, too large, or not of the common shape goes to the general path.
    size = len(data)
    if size <= limits.max_message_bytes:
        # endpos: the header section must end within `fast_path_bytes` (below every line, URI
        # and header-count limit), which also bounds the work spent on a message that is not
        # of the common shape before the general path reads it
        m = _fast_match(data, 0, limits.fast_path_bytes)
        if m is not None:
            hend = m.end()
            # every group in one call (order: fast.FAST_GROUPS)
            (status, reason, method, ruri, via_value, transport, host, port, via_params, branch,
             f_value, f_quoted, f_name, f_uri, f_params, f_tag, t_value, t_quoted, t_name, t_uri,
             t_params, t_tag, call_id, cseq_number, cseq_method, cl, mf) = m.groups()  # fmt: skip
            end = size if cl is None else hend + int(cl)
            if end <= size:
                msg: Request | Response
                if method is not None:
                    msg = _new(Request)
                    msg.method = method
                    msg.uri = ruri
                    msg._ruri = None
                    msg.start_line_end = data.find(b"\r\n") + 2  # no CR or LF in M, URI
                else:
                    msg = _new(Response)
                    msg.status = int(status)
                    msg.reason = reason
                    msg.start_line_end = len(reason) + 14  # SIP/2.0 SP Code SP Reason CRLF
                msg.raw = data if end == size else data[:end]
                msg.body = data[hend:end]
                msg.header_end = hend - 2
                uri_max = msg.limits_uri = limits.max_uri_bytes
                msg.fast_match = m
                msg.max_forwards = DEFAULT_MAX_FORWARDS if mf is None else int(mf)
                msg._names = None
                msg._values = None
                msg._keys = None
                msg._index = None
                msg._starts = None
                msg._headers = None
                msg._vias = None
                msg._contacts = None
                # the values that decided acceptance, built from the match (which validated
                # them) with no regex run again; their parts (URI, parameters) on first use
                via = msg.top_via = _new(MatchedVia)
                via.protocol = b"SIP/2.0"
                via.transport = transport  # upper case (the fast path admits no other)
                via.host = host  # lower-case hostname or IPv4, no IPv6 reference
                via.port = None if port is None else (_port_of(port) or int(port))
                via.raw = via_value
                via._params_raw = via_params
                via._params = None
                via.branch = branch
                # display names: quotes off, escapes kept (as NameAddr does)
                msg.from_ = matched_name_addr(
                    f_name if f_quoted is None else f_quoted, f_uri, f_params, f_tag, f_value,
                    uri_max,
                )  # fmt: skip
                msg.to = matched_name_addr(
                    t_name if t_quoted is None else t_quoted, t_uri, t_params, t_tag, t_value,
                    uri_max,
                )  # fmt: skip
                msg.call_id = call_id
                msg.cseq = _new_tuple(CSeq, (int(cseq_number), cseq_method))
                return msg
    return parse_message_general(data, limits)


def parse_message_general(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> Request | Response:
    """`parse_message` without its fast path (tests compare the two: same messages, same
    values, same errors)."""
    if type(data) is not bytes:
        data = bytes(data)
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    try:
        if len(data) > limits.max_message_bytes:
            raise MessageTooLarge("message larger than max_message_bytes")
        return _parse(data, start, limits)
    except ParseError as error:
        _recover(error, data, start, limits)
        raise


def _recover(error: ParseError, data: bytes, start: int, limits: ParserLimits) -> None:
    if not error.routable:
        recovered = recover_headers(data[: limits.max_message_bytes], limits, start)
        if recovered is not None:
            error.routable = True
            error.headers = recovered


def _parse(data: bytes, start: int, limits: ParserLimits) -> Request | Response:
    hend = data.find(b"\r\n\r\n", start)
    if hend < 0:
        # RFC 4475 baddn: no empty line. We do not guess where the headers end.
        raise ParseError("no empty line ends the header section")
    block = data[start:hend]
    crlf = block.count(b"\r\n")
    if crlf > limits.max_headers:
        raise MessageTooLarge("too many header lines")
    # RFC 3261 §7: lines end in CRLF; a bare CR or LF is a framing differential (SECURITY 13).
    if block.count(b"\r") != crlf or block.count(b"\n") != crlf:
        raise ParseError("bare CR or LF in the header section")
    first_end = block.find(b"\r\n")
    first = block[:first_end] if first_end >= 0 else block
    max_line = limits.max_line_bytes
    if (
        len(block) > max_line
        and max(map(len, block.split(b"\r\n"))) > max_line
        and block.find(b"\r\n ") < 0
        and block.find(b"\r\n\t") < 0
    ):
        raise MessageTooLarge("line too long")  # folded blocks are measured per unfolded line
    pairs: list[tuple[bytes, bytes]] = HEADER_RE.findall(block)
    headers: list[Header] | None = None
    names: tuple[bytes, ...]
    values: tuple[bytes, ...]
    if len(pairs) != crlf:
        if block.find(b"\r\n ") < 0 and block.find(b"\r\n\t") < 0:
            raise ParseError("malformed header line")
        headers = _read_folded(block, first, max_line)
        names, keys, values, _, _ = zip(*headers, strict=True)
    else:
        names, values = zip(*pairs, strict=True) if pairs else ((), ())
        keys = tuple(map(key_of, names))
        if block.find(b" \r\n") >= 0 or block.find(b"\t\r\n") >= 0 or block.endswith((b" ", b"\t")):
            values = tuple([v.rstrip(b" \t") for v in values])  # trailing LWS is not the value
    index = {k: [i] for i, k in enumerate(keys)}
    if len(index) != len(keys):
        index = index_keys(keys)
        for key in _SINGLE:
            found = index.get(key)
            if found is not None and len(found) > 1:
                raise ParseError("duplicate single-value header")

    body_start = hend + 4
    found = index.get(b"content-length")
    if found is not None:
        value = values[found[0]]
        # 1*DIGIT, but a leading zero other than "0" is refused (SECURITY-CASES 3: `0005` is a
        # differential between parsers); at most 10 digits ever reach int().
        if not (value.isdigit() and len(value) <= 10 and (value[0] != 48 or len(value) == 1)):
            raise ParseError("malformed Content-Length")
        end = body_start + int(value)
        if end > len(data):
            # RFC 3261 §18.3: on a datagram, a body shorter than Content-Length is an error.
            raise ParseError("Content-Length larger than the message body")
        raw = data[start:end]
        body = data[body_start:end]
    else:
        raw = data[start:] if start else data
        body = data[body_start:]
    header_end = hend + 2 - start
    uri_max = limits.max_uri_bytes

    msg: Request | Response
    if first[:4].upper() == b"SIP/":
        response = Response(raw, body, first, names, values, keys, index, header_end, uri_max)
        response.status, response.reason = _status_line(first)
        msg = response
    else:
        request = Request(raw, body, first, names, values, keys, index, header_end, uri_max)
        request.method, request.uri = _request_line(first, uri_max)
        request._ruri = None
        msg = request
    if headers is not None:  # folded: the spans are not one line each
        msg._headers = tuple(headers)
        msg._starts = [h.start for h in headers] + [header_end]
    if not index.keys() >= _MANDATORY:
        raise ParseError("missing mandatory header")
    _validate(msg, index, values)
    return msg


def _read_folded(block: bytes, first: bytes, max_line: int) -> list[Header]:
    """Slow path for a header block with obsolete line folding (RFC 3261 §7.3.1: a line that
    starts with SP/HTAB continues the previous one; the fold is one SP)."""
    lines = block.split(b"\r\n")
    groups: list[list[bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not groups:
                raise ParseError("folded line before the first header")
            groups[-1].append(line)
        else:
            groups.append([line])
    headers: list[Header] = []
    pos = len(first) + 2
    if len(first) > max_line:
        raise MessageTooLarge("line too long")
    for group in groups:
        size = sum(len(part) for part in group)
        if size > max_line:
            raise MessageTooLarge("line too long")
        # one SP per fold (RFC 3261 §7.3.1); whitespace-only continuation lines add nothing
        joined = b" ".join(p for p in (part.strip(b" \t") for part in group) if p)
        m = HEADER_RE.fullmatch(b"\r\n" + joined)
        if m is None:
            raise ParseError("malformed header line")
        name = m.group(1)
        key = key_of(name)
        end = pos + size + 2 * len(group)
        headers.append(Header(name, key, m.group(2).rstrip(b" \t"), pos, end))
        pos = end
    return headers


def _request_line(first: bytes, uri_max: int) -> tuple[bytes, bytes]:
    # RFC 3261 §7.1: Method SP Request-URI SP SIP-Version, single spaces, nothing else
    # (RFC 4475 lwsstart, trws, lwsruri are 400s: we do not trim trailing SP).
    parts = first.split(b" ")
    if len(parts) != 3:
        last = parts[-1]
        if len(parts) > 3 and _VERSION_RE.fullmatch(last) and last.upper() != b"SIP/2.0":
            raise VersionNotSupported("SIP version not supported")
        raise ParseError("malformed request line")
    method, uri, version = parts
    if version != b"SIP/2.0" and version.upper() != b"SIP/2.0":
        if _VERSION_RE.fullmatch(version) is not None:
            raise VersionNotSupported("SIP version not supported")
        raise ParseError("malformed SIP version")
    if method not in _KNOWN_METHODS and TOKEN_RE.fullmatch(method) is None:
        raise ParseError("malformed method")
    if len(uri) > uri_max:
        raise ParseError("Request-URI too long", status=414, reason="Request-URI Too Long")
    if not uri:
        raise ParseError("empty Request-URI")
    return method, uri


def _status_line(first: bytes) -> tuple[int, bytes]:
    # RFC 3261 §7.2: SIP-Version SP Status-Code SP Reason-Phrase (reason may be empty,
    # RFC 4475 noreason); 3 digits only, so bigcode's 4294967301 never reaches int().
    m = _STATUS_RE.fullmatch(first)
    if m is None:
        raise ParseError("malformed status line")
    if m.group(1).upper() != b"SIP/2.0":
        raise VersionNotSupported("SIP version not supported")
    status = int(m.group(2))
    if not 100 <= status <= 699:
        raise ParseError("status code out of range")
    return status, m.group(3)


def _validate(msg: Message, index: dict[bytes, list[int]], values: Sequence[bytes]) -> None:
    """Read the values that decide whether the message is acceptable at all (all mandatory
    headers are present). They are cached on the message, so the core reads them for free."""
    uri_max = msg.limits_uri
    idx = index[b"via"]
    if len(idx) == 1:
        vias = msg._vias = parse_via_values(values[idx[0]])  # every Via: RFC 4475 badinv01
    else:
        vias = msg.vias
    msg.top_via = vias[0]
    msg.from_ = NameAddr(values[index[b"from"][0]], uri_max)
    msg.to = NameAddr(values[index[b"to"][0]], uri_max)
    cseq = msg.cseq = parse_cseq(values[index[b"cseq"][0]])
    call_id = msg.call_id = values[index[b"call-id"][0]]
    if _CALL_ID_RE.fullmatch(call_id) is None:
        raise ParseError("malformed Call-ID")
    at = index.get(b"max-forwards")
    msg.max_forwards = DEFAULT_MAX_FORWARDS if at is None else parse_max_forwards(values[at[0]])
    if b"contact" in index:
        msg.contacts  # noqa: B018  (RFC 4475 regbadct)
    if isinstance(msg, Request):
        # RFC 3261 §8.2.2 / RFC 4475 mismatch01/02: the CSeq method is the request method.
        if cseq.method != msg.method:
            raise ParseError("CSeq method does not match the request method")
        # RFC 4475 escruri, RFC 5118 ipv6-bad; other schemes are the core's (416)
        check_request_uri(msg.uri, uri_max)
