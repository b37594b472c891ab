"""Parsing one SIP message (one UDP datagram, or one frame cut by `StreamFramer`).

Owns: `parse_message`, the strict RFC 3261 reading of the start line, the header section and the
Content-Length framing of a datagram, plus the recovery of the headers needed to answer a
malformed request. Raises `ParseError` (or its subclasses `MessageTooLarge`,
`VersionNotSupported`) and nothing else, whatever the input. Never decodes to str, never
re-serialises, never does I/O.

One pass over the header block: `bytes.split(b"\\r\\n")`, a cache from the header name as
received to its canonical key, an index key -> header positions. Typed values are parsed by the
message accessors; the ones needed to decide whether the message is acceptable at all (Via,
From, To, Call-ID, CSeq, Max-Forwards, Contact, Request-URI) are read here once and cached.

RFC 3261 §7.1-§7.5 (start line, headers, folding, leading CRLF), §7.3.3 (compact forms),
§8.1.1 and §8.2.2 (mandatory headers), §18.3 (Content-Length on datagrams), §20.14, §20.16,
§20.22, §25 (grammar); RFC 4475 and RFC 5118 (torture cases).
"""

from __future__ import annotations

import re

from sipguard.errors import MessageTooLarge, ParseError, VersionNotSupported
from sipguard.sip.fields import TOKEN_RE, canonical_key
from sipguard.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipguard.sip.message import Header, Message, RecoveredHeaders, Request, Response

__all__ = ["parse_message", "recover_headers"]

_MANDATORY = (b"via", b"from", b"to", b"call-id", b"cseq")
# RFC 3261 §7.3.1 / §20: headers that may appear once only (RFC 4475 multi01, mcl01).
_SINGLE = (b"to", b"from", b"call-id", b"cseq", b"max-forwards", b"content-length")
# Content-Length: 1*DIGIT, but a leading zero (other than "0") is refused (SECURITY-CASES 3:
# `0005` is a differential between parsers); at most 10 digits are ever passed to int().
_CONTENT_LENGTH_RE = re.compile(rb"0|[1-9][0-9]{0,9}")
_VERSION_RE = re.compile(rb"[Ss][Ii][Pp]/[0-9]{1,5}\.[0-9]{1,5}")
_STATUS_RE = re.compile(
    rb"([Ss][Ii][Pp]/[0-9]{1,5}\.[0-9]{1,5}) ([0-9]{3}) ([^\x00-\x08\x0a-\x1f\x7f]*)"
)
_CALL_ID_WORD = rb"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID_RE = re.compile(_CALL_ID_WORD + rb"(?:@" + _CALL_ID_WORD + rb")?")
_SIP_SCHEME_RE = re.compile(rb"[Ss][Ii][Pp][Ss]?:")

# Header name as received (bytes before the colon, trailing SP/HTAB included) -> (name without
# the trailing whitespace, canonical key). Holds only valid names; bounded so that a flood of
# distinct names cannot grow it.
_KEYS: dict[bytes, tuple[bytes, bytes]] = {}
_KEYS_MAX = 2048
_new_tuple = tuple.__new__


def _key_for(raw_name: bytes) -> tuple[bytes, bytes]:
    name = raw_name.rstrip(b" \t")
    # RFC 3261 §7.3.1 / §25: field-name is a token; only SP/HTAB may precede the colon
    # (SECURITY-CASES 10: `To\x01:` must not be read as To).
    if TOKEN_RE.fullmatch(name) is None:
        raise ParseError("malformed header name")
    entry = (name, canonical_key(name))
    if len(_KEYS) < _KEYS_MAX and len(raw_name) <= 64:
        _KEYS[raw_name] = entry
    return entry


def parse_message(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one SIP message from one datagram (or one frame from `StreamFramer`).

    Octets after Content-Length are ignored (RFC 3261 §18.3, RFC 4475 dblreq); a body shorter
    than Content-Length is a 400; without Content-Length the body is the rest of the datagram.
    A ParseError for a request carries `routable=True` and `headers` (a `RecoveredHeaders`)
    when Via, From, To, Call-ID and CSeq could still be read; a response never does."""
    if not isinstance(data, bytes):
        data = bytes(data)
    start = 0
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    while data.startswith(b"\r\n", start):
        start += 2
    try:
        if len(data) > limits.max_message_bytes:
            raise MessageTooLarge("message larger than max_message_bytes")
        return _parse(data, start, limits)
    except ParseError as error:
        if not error.routable:
            recovered = recover_headers(data[: limits.max_message_bytes], limits, start)
            if recovered is not None:
                error.routable = True
                error.headers = recovered
        raise


def _parse(data: bytes, start: int, limits: ParserLimits) -> Request | Response:
    hend = data.find(b"\r\n\r\n", start)
    if hend < 0:
        # RFC 4475 baddn: no empty line. We do not guess where the headers end.
        raise ParseError("no empty line ends the header section")
    block = data[start:hend]
    crlf = block.count(b"\r\n")
    # RFC 3261 §7: lines end in CRLF; a bare CR or LF is a framing differential (SECURITY 13).
    if block.count(b"\r") != crlf or block.count(b"\n") != crlf:
        raise ParseError("bare CR or LF in the header section")
    if crlf > limits.max_headers:
        raise MessageTooLarge("too many header lines")
    lines = block.split(b"\r\n")
    first = lines[0]
    max_line = limits.max_line_bytes
    if len(block) > max_line and len(first) > max_line:
        raise MessageTooLarge("start line too long")

    headers: list[Header] = []
    index: dict[bytes, list[int]] = {}
    pos = len(first) + 2
    keys = _KEYS
    if b"\r\n " in block or b"\r\n\t" in block:
        _read_folded(lines, pos, headers, index, max_line)
    else:
        check_len = len(block) > max_line
        for line in lines[1:]:
            colon = line.find(b":")
            if colon <= 0:
                raise ParseError("header line without a name and colon")
            raw_name = line[:colon]
            entry = keys.get(raw_name)
            if entry is None:
                entry = _key_for(raw_name)
            key = entry[1]
            end = pos + len(line) + 2
            if check_len and len(line) > max_line:
                raise MessageTooLarge("header line too long")
            i = len(headers)
            headers.append(
                _new_tuple(Header, (entry[0], key, line[colon + 1 :].strip(b" \t"), pos, end))
            )
            found = index.get(key)
            if found is None:
                index[key] = [i]
            else:
                found.append(i)
            pos = end

    for key in _SINGLE:
        found = index.get(key)
        if found is not None and len(found) > 1:
            raise ParseError("duplicate single-value header")

    body_start = hend + 4
    available = len(data) - body_start
    found = index.get(b"content-length")
    if found is not None:
        value = headers[found[0]].value
        if _CONTENT_LENGTH_RE.fullmatch(value) is None:
            raise ParseError("malformed Content-Length")
        length = int(value)
        if length > available:
            # RFC 3261 §18.3: on a datagram, a body shorter than Content-Length is an error.
            raise ParseError("Content-Length larger than the message body")
    else:
        length = available
    end = body_start + length
    raw = data[start:end]
    body = data[body_start:end]
    header_end = hend + 2 - start
    hdrs = tuple(headers)
    uri_max = limits.max_uri_bytes

    msg: Request | Response
    if first[:4].upper() == b"SIP/":
        msg = _response(first, raw, body, hdrs, index, header_end, uri_max)
    else:
        msg = _request(first, raw, body, hdrs, index, header_end, uri_max)
    for key in _MANDATORY:
        if key not in index:
            raise ParseError("missing mandatory header")
    _validate(msg)
    return msg


def _read_folded(
    lines: list[bytes],
    pos: int,
    headers: list[Header],
    index: dict[bytes, list[int]],
    max_line: int,
) -> None:
    """Slow path for a header block with obsolete line folding (RFC 3261 §7.3.1: a line that
    starts with SP/HTAB continues the previous one; the fold is one SP)."""
    groups: list[list[bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not groups:
                raise ParseError("folded line before the first header")
            groups[-1].append(line)
        else:
            groups.append([line])
    for group in groups:
        first = group[0]
        colon = first.find(b":")
        if colon <= 0:
            raise ParseError("header line without a name and colon")
        raw_name = first[:colon]
        entry = _KEYS.get(raw_name) or _key_for(raw_name)
        size = sum(len(part) for part in group)
        if size > max_line:
            raise MessageTooLarge("header line too long")
        end = pos + size + 2 * len(group)
        parts = [first[colon + 1 :].strip(b" \t")]
        parts.extend(part.strip(b" \t") for part in group[1:])
        value = b" ".join(part for part in parts if part)
        i = len(headers)
        headers.append(Header(entry[0], entry[1], value, pos, end))
        index.setdefault(entry[1], []).append(i)
        pos = end


def _request(
    first: bytes,
    raw: bytes,
    body: bytes,
    headers: tuple[Header, ...],
    index: dict[bytes, list[int]],
    header_end: int,
    uri_max: int,
) -> Request:
    # RFC 3261 §7.1: Method SP Request-URI SP SIP-Version, single spaces, nothing else
    # (RFC 4475 lwsstart, trws, lwsruri are 400s: we do not trim trailing SP).
    parts = first.split(b" ")
    if len(parts) != 3:
        last = parts[-1]
        if len(parts) > 3 and _VERSION_RE.fullmatch(last) and last.upper() != b"SIP/2.0":
            raise VersionNotSupported("SIP version not supported")
        raise ParseError("malformed request line")
    method, uri, version = parts
    if version.upper() != b"SIP/2.0":
        if _VERSION_RE.fullmatch(version) is not None:
            raise VersionNotSupported("SIP version not supported")
        raise ParseError("malformed SIP version")
    if TOKEN_RE.fullmatch(method) is None:
        raise ParseError("malformed method")
    if len(uri) > uri_max:
        raise ParseError("Request-URI too long", status=414, reason="Request-URI Too Long")
    if not uri:
        raise ParseError("empty Request-URI")
    return Request(method, uri, raw, body, headers, index, len(first) + 2, header_end, uri_max)


def _response(
    first: bytes,
    raw: bytes,
    body: bytes,
    headers: tuple[Header, ...],
    index: dict[bytes, list[int]],
    header_end: int,
    uri_max: int,
) -> Response:
    # RFC 3261 §7.2: SIP-Version SP Status-Code SP Reason-Phrase (reason may be empty,
    # RFC 4475 noreason); 3 digits only, so bigcode's 4294967301 never reaches int().
    m = _STATUS_RE.fullmatch(first)
    if m is None:
        raise ParseError("malformed status line")
    if m.group(1).upper() != b"SIP/2.0":
        raise VersionNotSupported("SIP version not supported")
    status = int(m.group(2))
    if status < 100:
        raise ParseError("status code out of range")
    return Response(
        status, m.group(3), raw, body, headers, index, len(first) + 2, header_end, uri_max
    )


def _validate(msg: Message) -> None:
    """Read the values that decide whether the message is acceptable at all; they are cached,
    so the core reads them again for free."""
    msg.vias  # noqa: B018  (parse every Via value: RFC 4475 badinv01)
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    cseq = msg.cseq
    if _CALL_ID_RE.fullmatch(msg.call_id) is None:
        raise ParseError("malformed Call-ID")
    msg.max_forwards  # noqa: B018
    if b"contact" in msg:
        msg.contacts  # noqa: B018  (RFC 4475 regbadct)
    if isinstance(msg, Request):
        # RFC 3261 §8.2.2 / RFC 4475 mismatch01/02: the CSeq method is the request method.
        if cseq.method != msg.method:
            raise ParseError("CSeq method does not match the request method")
        if _SIP_SCHEME_RE.match(msg.uri) is not None:
            ruri = msg.request_uri
            # RFC 4475 escruri: URI headers are not allowed in a Request-URI.
            if ruri.headers:
                raise ParseError("headers in the Request-URI")
        else:
            msg.request_uri  # noqa: B018  (absoluteURI syntax; the core answers 416)


def recover_headers(
    data: bytes, limits: ParserLimits = DEFAULT_LIMITS, start: int = 0
) -> RecoveredHeaders | None:
    """Leniently read the request method and the Via, From, To, Call-ID and CSeq values of a
    request that failed to parse, so that a 400/505/513 reply can be built (RFC 3261 §8.2.6).
    None for a response, or when any of them is missing or holds CR, LF or NUL."""
    end = data.find(b"\r\n\r\n", start)
    block = data[start:] if end < 0 else data[start:end]
    lines = block.split(b"\r\n")
    method = lines[0].split(b" ", 1)[0]
    if method[:4].upper() == b"SIP/" or TOKEN_RE.fullmatch(method) is None:
        return None
    found: dict[bytes, bytes] = {}
    vias: list[bytes] = []
    current: list[bytes] | None = None
    groups: list[list[bytes]] = []
    for line in lines[1 : limits.max_headers + 1]:
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line)
        else:
            current = [line]
            groups.append(current)
    for group in groups:
        first = group[0]
        colon = first.find(b":")
        if colon <= 0:
            continue
        name = first[:colon].rstrip(b" \t")
        if TOKEN_RE.fullmatch(name) is None:
            continue
        key = canonical_key(name)
        if key not in (b"via", b"from", b"to", b"call-id", b"cseq"):
            continue
        parts = [first[colon + 1 :].strip(b" \t")]
        parts.extend(part.strip(b" \t") for part in group[1:])
        value = b" ".join(part for part in parts if part)
        if (
            not value
            or len(value) > limits.max_line_bytes
            or b"\r" in value
            or b"\n" in value
            or b"\x00" in value
        ):
            continue
        if key == b"via":
            vias.append(value)
        elif key not in found:
            found[key] = value
    if not vias or len(found) != 4:
        return None
    return RecoveredHeaders(
        method, tuple(vias), found[b"from"], found[b"to"], found[b"call-id"], found[b"cseq"]
    )
