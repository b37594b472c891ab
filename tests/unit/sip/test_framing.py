"""StreamFramer: messages split at every byte, pipelining, RFC 5626 keep-alives, limits."""

from __future__ import annotations

import pytest

from sipguard.errors import MessageTooLarge, ParseError
from sipguard.sip import DEFAULT_LIMITS, KeepAlive, ParserLimits, StreamFramer, parse_message
from sipguard.sip.framing import Frame
from tests.conftest import CORPORA

from .test_corpus import RFC4475_PARSE, RFC5118, RFC5118_PARSE

RFC4475 = CORPORA / "rfc4475"


def _framable() -> list[bytes]:
    """Valid corpus messages that carry a Content-Length, trimmed to it (as parsed)."""
    out = []
    paths = [RFC4475 / f"{n}.dat" for n in RFC4475_PARSE]
    paths += [RFC5118 / f"{n}.dat" for n in RFC5118_PARSE]
    for path in paths:
        msg = parse_message(path.read_bytes())
        if b"content-length" in msg:
            out.append(msg.raw)
    return out


MESSAGES = _framable()


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def test_enough_messages() -> None:
    assert len(MESSAGES) >= 30


@pytest.mark.parametrize("index", range(len(MESSAGES)))
def test_split_at_every_offset(index: int) -> None:
    data = MESSAGES[index]
    for cut in range(len(data) + 1):
        framer = StreamFramer()
        assert feed_all(framer, [data[:cut], data[cut:]]) == [data]
        assert framer.buffered == 0


def test_byte_by_byte() -> None:
    data = MESSAGES[0]
    framer = StreamFramer()
    out = feed_all(framer, [data[i : i + 1] for i in range(len(data))])
    assert out == [data]


def test_pipelined_with_keepalives() -> None:
    stream = b"\r\n\r\n".join(MESSAGES) + b"\r\n\r\n"
    expected: list[Frame] = []
    for m in MESSAGES:
        expected += [m, KeepAlive.PING]
    framer = StreamFramer()
    assert feed_all(framer, [stream]) == expected
    # and split into 7-byte segments (CRLFCRLF split across segments)
    framer = StreamFramer()
    assert feed_all(framer, [stream[i : i + 7] for i in range(0, len(stream), 7)]) == expected
    for frame in expected:
        if isinstance(frame, bytes):
            parse_message(frame)


def test_ping_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlive.PING]
    assert framer.feed(b"\r\n") == []  # could still become a ping
    assert framer.feed(b"\r\n") == [KeepAlive.PING]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n") == []
    assert framer.feed(MESSAGES[0]) == [KeepAlive.PONG, MESSAGES[0]]
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [KeepAlive.PING, KeepAlive.PING]


def test_stream_without_content_length_closes() -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError):
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")
    with pytest.raises(ParseError):
        framer.feed(b"x")  # a failed framer stays failed


@pytest.mark.parametrize(
    "value", [b"-999", b"+5", b"0005", b"1 0", b"2147483648999", b"0, 193", b"abc", b""]
)
def test_content_length_overflow_on_stream(value: bytes) -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError):
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: " + value + b"\r\n\r\n")


def test_two_content_lengths_on_stream() -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError):
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\nContent-Length: 0\r\n\r\n")


def test_folded_content_length() -> None:
    data = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n 3\r\n\r\nabcXYZ"
    assert StreamFramer().feed(data) == [data[:-3]]


def test_header_block_cap() -> None:
    limits = ParserLimits(max_header_block_bytes=100)
    framer = StreamFramer(limits)
    framer.feed(b"A" * 100)
    with pytest.raises(MessageTooLarge):
        framer.feed(b"A")


def test_header_block_cap_exact() -> None:
    head = b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n"
    for cap, ok in ((len(head) - 1, False), (len(head), True), (len(head) + 1, True)):
        framer = StreamFramer(ParserLimits(max_header_block_bytes=cap))
        if ok:
            assert framer.feed(head) == [head]
        else:
            with pytest.raises(MessageTooLarge):
                framer.feed(head)


def test_body_cap() -> None:
    head = b"OPTIONS sip:a@b SIP/2.0\r\nl: %d\r\n\r\n"
    for size, ok in ((99, True), (100, True), (101, False)):
        framer = StreamFramer(ParserLimits(max_body_bytes=100))
        data = head % size + b"x" * size
        if ok:
            assert framer.feed(data) == [data]
        else:
            with pytest.raises(MessageTooLarge):
                framer.feed(data)


def test_message_cap_on_stream() -> None:
    head = b"OPTIONS sip:a@b SIP/2.0\r\nl: %d\r\n\r\n"
    size = 50
    total = len(head % size) + size
    for cap, ok in ((total - 1, False), (total, True), (total + 1, True)):
        framer = StreamFramer(ParserLimits(max_message_bytes=cap))
        data = head % size + b"x" * size
        if ok:
            assert framer.feed(data) == [data]
        else:
            with pytest.raises(MessageTooLarge):
                framer.feed(data)


def test_slow_loris_buffer_bounded() -> None:
    framer = StreamFramer()
    for _ in range(DEFAULT_LIMITS.max_header_block_bytes):
        framer.feed(b"a")
    with pytest.raises(MessageTooLarge):
        framer.feed(b"a")
    assert framer.buffered == 0
