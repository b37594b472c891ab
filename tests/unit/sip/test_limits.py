"""ParserLimits: every limit at limit - 1, limit and limit + 1."""

from __future__ import annotations

import pytest

from sipguard.errors import MessageTooLarge, ParseError
from sipguard.settings import Limits
from sipguard.sip import DEFAULT_LIMITS, ParserLimits, parse_message

HEAD = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKlimits\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: limits@192.0.2.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
)


def message(extra: bytes = b"", body: bytes = b"") -> bytes:
    return HEAD + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_defaults() -> None:
    assert DEFAULT_LIMITS.max_message_bytes == 65_535
    assert DEFAULT_LIMITS.max_headers == 256
    assert DEFAULT_LIMITS.max_line_bytes == 8_192
    assert DEFAULT_LIMITS.max_uri_bytes == 1_024


def test_defaults_are_the_settings_defaults() -> None:
    """One home: `settings.Limits` holds the defaults; the codec's are read from it."""
    assert ParserLimits.from_settings(Limits()) == DEFAULT_LIMITS == ParserLimits()
    custom = Limits(max_message_bytes=4000, max_headers=50, max_line_bytes=900, max_uri_bytes=300)
    limits = ParserLimits.from_settings(custom)
    assert (limits.max_message_bytes, limits.max_body_bytes) == (4000, 4000)
    assert (limits.max_headers, limits.max_line_bytes, limits.max_uri_bytes) == (50, 900, 300)
    assert limits.max_header_block_bytes == DEFAULT_LIMITS.max_header_block_bytes


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ParserLimits(max_headers=0)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_message_bytes(delta: int) -> None:
    base = len(message(body=b"x" * 10_000)) - 10_000  # Content-Length of 5 digits
    limit = DEFAULT_LIMITS.max_message_bytes
    data = message(body=b"x" * (limit + delta - base))
    assert len(data) == limit + delta
    if delta <= 0:
        assert len(parse_message(data).body) == limit + delta - base
    else:
        with pytest.raises(MessageTooLarge) as info:
            parse_message(data)
        assert info.value.status == 513
        assert info.value.routable  # the 513 can still be answered


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_headers(delta: int) -> None:
    limits = DEFAULT_LIMITS
    count = message().count(b"\r\n") - 2  # header lines
    extra = b"X-Pad: 1\r\n" * (limits.max_headers + delta - count)
    data = message(extra)
    assert data.count(b"\r\n") - 2 == limits.max_headers + delta
    if delta <= 0:
        assert len(parse_message(data).headers) == limits.max_headers + delta
    else:
        with pytest.raises(MessageTooLarge):
            parse_message(data)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_line_bytes(delta: int) -> None:
    limit = DEFAULT_LIMITS.max_line_bytes
    line = b"X-Long: " + b"a" * (limit + delta - 8)
    assert len(line) == limit + delta
    data = message(line + b"\r\n")
    if delta <= 0:
        assert parse_message(data).get(b"x-long") == line[8:]
    else:
        with pytest.raises(MessageTooLarge):
            parse_message(data)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_line_bytes_folded(delta: int) -> None:
    # the limit applies to the unfolded line: both physical lines together
    limit = DEFAULT_LIMITS.max_line_bytes
    first = b"X-Long: " + b"a" * 100
    second = b" " + b"b" * (limit + delta - len(first) - 1)
    data = message(first + b"\r\n" + second + b"\r\n")
    if delta <= 0:
        value = parse_message(data).get(b"x-long")
        assert value == b"a" * 100 + b" " + second[1:]
    else:
        with pytest.raises(MessageTooLarge):
            parse_message(data)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_uri_bytes_request_uri(delta: int) -> None:
    limit = DEFAULT_LIMITS.max_uri_bytes
    uri = b"sip:" + b"u" * (limit + delta - len(b"sip:@example.com")) + b"@example.com"
    assert len(uri) == limit + delta
    data = message().replace(b"sip:bob@example.com SIP/2.0", uri + b" SIP/2.0", 1)
    if delta <= 0:
        msg = parse_message(data)
        assert msg.request_uri.raw == uri  # type: ignore[union-attr]
    else:
        with pytest.raises(ParseError) as info:
            parse_message(data)
        assert info.value.status == 414
        assert info.value.routable


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_uri_bytes_header_uri(delta: int) -> None:
    limit = DEFAULT_LIMITS.max_uri_bytes
    uri = b"sip:" + b"u" * (limit + delta - len(b"sip:@example.com")) + b"@example.com"
    data = message(b"Contact: <" + uri + b">\r\n")
    if delta <= 0:
        assert parse_message(data).contacts[0].uri.raw == uri
    else:
        with pytest.raises(ParseError) as info:
            parse_message(data)
        assert info.value.status == 400


def test_custom_limits_apply() -> None:
    limits = ParserLimits(max_message_bytes=100)
    with pytest.raises(MessageTooLarge):
        parse_message(message(), limits)


def test_oversized_header_name_is_bounded() -> None:
    # SECURITY-CASES 7: 1 MB header name / line on a datagram
    data = message(b"X" * 70_000 + b": 1\r\n")
    with pytest.raises(MessageTooLarge):
        parse_message(data)


def test_ten_thousand_headers() -> None:
    with pytest.raises(MessageTooLarge):
        parse_message(message(b"A: 1\r\n" * 10_000))
