"""parse_message: start lines, header syntax, Content-Length on datagrams, recovery for replies."""

from __future__ import annotations

import pytest

from sipguard.errors import ParseError, VersionNotSupported
from sipguard.sip import RecoveredHeaders, Request, Response, parse_message

HEADERS = (
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1;rport\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: p1@192.0.2.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
)


def req(start: bytes = b"OPTIONS sip:bob@example.com SIP/2.0", extra: bytes = b"",
        body: bytes = b"", headers: bytes = HEADERS) -> bytes:  # fmt: skip
    return start + b"\r\n" + headers + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def reject(data: bytes, status: int = 400) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.status == status
    return info.value


def test_basic_request() -> None:
    msg = parse_message(req())
    assert isinstance(msg, Request)
    assert msg.method == b"OPTIONS"
    assert msg.uri == b"sip:bob@example.com"
    assert msg.top_via.branch == b"z9hG4bKp1"
    assert msg.top_via.has_rport and msg.top_via.rport is None
    assert msg.top_via.port == 5060
    assert msg.from_.display_name == b"Alice" and msg.from_.tag == b"a1"
    assert msg.to.tag is None
    assert msg.call_id == b"p1@192.0.2.1"
    assert (msg.cseq.number, msg.cseq.method) == (1, b"OPTIONS")
    assert msg.max_forwards == 70  # absent: RFC 3261 default
    assert msg.user_agent is None
    assert msg.content_length == 0
    assert msg.start_line == b"OPTIONS sip:bob@example.com SIP/2.0"


def test_header_spans_cover_raw() -> None:
    data = req(extra=b"Folded: a\r\n  b\r\n")
    msg = parse_message(data)
    pieces = [msg.raw[: msg.start_line_end]]
    pieces += [msg.raw[h.start : h.end] for h in msg.headers]
    pieces.append(msg.raw[msg.header_end :])
    assert b"".join(pieces) == data
    assert msg.get(b"folded") == b"a b"


def test_compact_forms_and_case() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP h.example.com;branch=z9hG4bKc\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nT: <sip:bob@example.com>\r\ni: c@h\r\n"
        b"cSeQ: 2 INVITE\r\nm: <sip:a@h.example.com>\r\nk: timer\r\ns: hi\r\n"
        b"c: application/sdp\r\ne: gzip\r\no: presence\r\nu: dialog\r\nr: <sip:c@d>\r\n"
        b"b: <sip:e@f>\r\na: *;audio\r\nj: *;video\r\nd: proxy\r\nx: 1800\r\ny: abc\r\n"
        b"n: <http://x/y>;alg=rsa-sha1\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(data)
    keys = [h.key for h in msg.headers]
    assert keys == [
        b"via", b"from", b"to", b"call-id", b"cseq", b"contact", b"supported", b"subject",
        b"content-type", b"content-encoding", b"event", b"allow-events", b"refer-to",
        b"referred-by", b"accept-contact", b"reject-contact", b"request-disposition",
        b"session-expires", b"identity", b"identity-info", b"content-length",
    ]  # fmt: skip
    assert msg.headers[2].name == b"T"
    assert msg.call_id == b"c@h"
    assert msg.indices(b"I") == [3]


@pytest.mark.parametrize(
    "start",
    [
        b"OPTIONS  sip:bob@example.com SIP/2.0",  # lwsstart
        b"OPTIONS sip:bob@example.com SIP/2.0 ",  # trws
        b" OPTIONS sip:bob@example.com SIP/2.0",
        b"OPTIONS <sip:bob@example.com> SIP/2.0",  # ltgtruri
        b"OPTIONS sip:bob@example.com",  # no version
        b"OPTIONS sip:bob@example.com HTTP/1.1",
        b"OPT\x00IONS sip:bob@example.com SIP/2.0",
        b"OPTIONS\tsip:bob@example.com SIP/2.0",
        b"OPTIONS sip:2001:db8::10 SIP/2.0",  # RFC 5118 4.2
        b"OPTIONS sip:bob@[2001:db8:::192.0.2.1] SIP/2.0",  # RFC 5118 4.10
        b"OPTIONS sip:bob@example.com?Route=%3Csip:x%3E SIP/2.0",  # escruri
        b"OPTIONS sip:bob@example.com:99999 SIP/2.0",
        b"OPTIONS sip:b%zzob@example.com SIP/2.0",
        b"OPTIONS sip:bob@exa mple.com SIP/2.0",
    ],
)
def test_malformed_request_lines(start: bytes) -> None:
    method = start.split(b" ", 1)[0]
    data = req(start).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 " + (method.strip() or b"X"))
    reject(data)


def test_version_not_supported() -> None:
    error = reject(req(b"OPTIONS sip:bob@example.com SIP/7.0"), 505)
    assert isinstance(error, VersionNotSupported)
    assert error.routable


def test_lowercase_sip_version_accepted() -> None:
    # RFC 3261 §7.1: SIP-Version is case-insensitive
    assert parse_message(req(b"OPTIONS sip:bob@example.com sip/2.0"))


def test_method_is_case_sensitive() -> None:
    data = req(b"register sip:bob@example.com SIP/2.0").replace(b"1 OPTIONS", b"1 register")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.method == b"register"
    assert msg.method.upper() != msg.method


def test_cseq_method_mismatch() -> None:
    data = req(b"INVITE sip:bob@example.com SIP/2.0")
    assert reject(data).routable


@pytest.mark.parametrize("cseq", [b"4294967296 OPTIONS", b"36893488147419103232 OPTIONS",
                                  b"-1 OPTIONS", b"1", b"x OPTIONS", b"1 OPTIONS x"])  # fmt: skip
def test_cseq_overflow(cseq: bytes) -> None:
    reject(req(headers=HEADERS.replace(b"1 OPTIONS", cseq)))


def test_cseq_max() -> None:
    msg = parse_message(req(headers=HEADERS.replace(b"CSeq: 1 ", b"CSeq: 4294967295 ")))
    assert msg.cseq.number == 2**32 - 1


@pytest.mark.parametrize(("value", "ok"), [(b"0", 0), (b"255", 255), (b"0068", 68), (b"256", None),
                                          (b"300", None), (b"-1", None), (b"1 0", None),
                                          (b"99999999999999999999", None)])  # fmt: skip
def test_max_forwards_range(value: bytes, ok: int | None) -> None:
    data = req(extra=b"Max-Forwards: " + value + b"\r\n")
    if ok is None:
        reject(data)
    else:
        assert parse_message(data).max_forwards == ok


@pytest.mark.parametrize(
    "header",
    [b"To", b"From", b"Call-ID", b"CSeq", b"Max-Forwards", b"Content-Length"],
)
def test_duplicate_single_value_headers(header: bytes) -> None:
    values = {
        b"To": b"<sip:x@example.com>",
        b"From": b"<sip:y@example.com>;tag=2",
        b"Call-ID": b"other@h",
        b"CSeq": b"1 OPTIONS",
        b"Max-Forwards": b"70",
        b"Content-Length": b"0",
    }
    extra = header + b": " + values[header] + b"\r\n"
    if header == b"Max-Forwards":
        extra += extra
    reject(req(extra=extra))


def test_duplicate_by_compact_form() -> None:
    reject(req(extra=b"t: <sip:x@example.com>\r\n"))
    reject(req(extra=b"l: 0\r\n"))


@pytest.mark.parametrize("missing", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_missing_mandatory(missing: bytes) -> None:
    headers = b"".join(
        line + b"\r\n" for line in HEADERS.split(b"\r\n") if line and not line.startswith(missing)
    )
    error = reject(req(headers=headers))
    assert error.routable is False


@pytest.mark.parametrize(
    "line",
    [
        b"To\x01: <sip:x@y>",  # SECURITY-CASES 10
        b"X Y: 1",
        b"NoColon",
        b": value",
        b"X-\x00: 1",
        b"\xffX: 1",
    ],
)
def test_header_name_tricks(line: bytes) -> None:
    reject(req(extra=line + b"\r\n"))


def test_space_before_colon_allowed() -> None:
    msg = parse_message(req(extra=b"X-Thing \t : v\r\n"))
    assert msg.get(b"x-thing") == b"v"
    assert msg.headers[-2].name == b"X-Thing"


@pytest.mark.parametrize("sep", [b"\n", b"\r", b"\r\r\n"])
def test_bare_cr_lf_rejected(sep: bytes) -> None:
    reject(req(extra=b"X-A: 1" + sep + b"X-B: 2\r\n"))


def test_lf_only_message_rejected() -> None:
    reject(req().replace(b"\r\n", b"\n"))


def test_folding_in_mandatory_headers() -> None:
    data = req(
        headers=HEADERS.replace(b"Call-ID: p1", b"Call-ID:\r\n p1").replace(
            b"CSeq: 1 OPTIONS", b"CSeq: 1\r\n\tOPTIONS"
        )
    )
    msg = parse_message(data)
    assert msg.call_id == b"p1@192.0.2.1"
    assert msg.cseq.method == b"OPTIONS"
    assert msg.raw == data


def test_fold_before_first_header_rejected() -> None:
    reject(b"OPTIONS sip:bob@example.com SIP/2.0\r\n  x\r\n" + HEADERS + b"l: 0\r\n\r\n")


def test_nul_in_quoted_display_name_kept() -> None:
    data = req(headers=HEADERS.replace(b'"Alice"', b'"Al\x00ice"'))
    msg = parse_message(data)
    assert msg.from_.display_name == b"Al\x00ice"


def test_leading_crlf_ignored() -> None:
    data = req()
    msg = parse_message(b"\r\n\r\n" + data)
    assert msg.raw == data


@pytest.mark.parametrize(
    "data",
    [b"", b"\r\n", b"\r\n\r\n", b"\x00" * 10, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"SIP/2.0 200 OK\r\n\r\n"],
)  # fmt: skip
def test_garbage(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert not info.value.routable


# --- Content-Length on datagrams (RFC 3261 §18.3; SECURITY-CASES 1-4) ---


def test_content_length_trailing_octets_ignored() -> None:
    data = req(body=b"hello") + b"TRAILING GARBAGE"
    msg = parse_message(data)
    assert msg.body == b"hello"
    assert msg.raw == data[: -len(b"TRAILING GARBAGE")]


def test_content_length_larger_than_datagram() -> None:
    data = req(body=b"hello")[:-2]
    assert reject(data).routable


def test_missing_content_length_takes_the_rest() -> None:
    data = req(body=b"").replace(b"Content-Length: 0\r\n", b"") + b"body bytes"
    assert parse_message(data).body == b"body bytes"


@pytest.mark.parametrize(
    "value",
    [b"-999", b"+5", b"0005", b"00", b"1 0", b"2147483648", b"4294967328",
     b"18446744073709551616", b"99999999999999999999999", b"0, 193", b"0x10", b"", b"\xd9\xa3"],
)  # fmt: skip
def test_content_length_overflow(value: bytes) -> None:
    data = req().replace(b"Content-Length: 0", b"Content-Length: " + value)
    reject(data)


def test_two_content_lengths_compact_and_full() -> None:
    reject(req(extra=b"l: 0\r\n"))


# --- responses ---


def test_response() -> None:
    data = b"SIP/2.0 180 Ringing\r\n" + HEADERS + b"Content-Length: 0\r\n\r\n"
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (180, b"Ringing")


@pytest.mark.parametrize(
    "line",
    [b"SIP/2.0 4294967301 Bad", b"SIP/2.0 099 Low", b"SIP/2.0 700 High", b"SIP/2.0 20 OK",
     b"SIP/2.0 200", b"SIP/2.0  200 OK", b"SIP/2.0 200 O\x00K"],
)  # fmt: skip
def test_bad_status_lines(line: bytes) -> None:
    error = reject(line + b"\r\n" + HEADERS + b"Content-Length: 0\r\n\r\n")
    assert not error.routable  # a response is never answered


def test_response_version() -> None:
    with pytest.raises(VersionNotSupported) as info:
        parse_message(b"SIP/3.0 200 OK\r\n" + HEADERS + b"l: 0\r\n\r\n")
    assert not info.value.routable


# --- recovery for error replies ---


def test_recovered_headers() -> None:
    data = req(extra=b"Max-Forwards: 300\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK2\r\n")
    error = reject(data)
    assert error.routable
    headers = error.headers
    assert isinstance(headers, RecoveredHeaders)
    assert headers.method == b"OPTIONS"
    assert headers.vias == (
        b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1;rport",
        b"SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK2",
    )
    assert headers.from_ == b'"Alice" <sip:alice@example.com>;tag=a1'
    assert headers.to == b"<sip:bob@example.com>"
    assert headers.call_id == b"p1@192.0.2.1"
    assert headers.cseq == b"1 OPTIONS"


def test_recovery_refuses_injection() -> None:
    data = req(headers=HEADERS.replace(b"Call-ID: p1", b"Call-ID: p1\nEvil: x"))
    error = reject(data)
    assert not error.routable
