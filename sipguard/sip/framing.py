"""Framing SIP messages on a byte stream (TCP, TLS).

Owns: `StreamFramer`, which cuts a stream into complete messages (exact bytes of header section
and body) and RFC 5626 keep-alives, and `KeepAlive`. It reads only the Content-Length of each
header section; the frame is then parsed by `parse_message`. Never does I/O, never waits, never
buffers more than the limits allow: any violation raises and the shell closes the connection
(the framer is unusable afterwards). When the header section was whole (a missing, duplicate
or malformed Content-Length, a body or message over the limits), the error carries the
recovered headers (`routable`), so that the core can answer 400/513 before the close.

RFC 3261 §7.5 (CRLF before a start line), §8.2.6 (replies to bad requests), §18.3 (Content-Length
mandatory on streams),
§20.14; RFC 5626 §3.5.1 (CRLFCRLF ping, CRLF pong).
"""

from __future__ import annotations

import re
from enum import Enum

from sipguard.errors import MessageTooLarge, ParseError
from sipguard.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipguard.sip.recovery import recover_headers

__all__ = ["Frame", "KeepAlive", "StreamFramer"]

_CONTENT_LENGTH_RE = re.compile(rb"0|[1-9][0-9]{0,9}")


class KeepAlive(Enum):
    """RFC 5626 §3.5.1 keep-alives seen between messages."""

    PING = "ping"  # CRLFCRLF: the shell answers with one CRLF (a pong)
    PONG = "pong"  # a single CRLF: nothing to do


Frame = bytes | KeepAlive


def _content_length(block: bytes) -> int:
    """The Content-Length of a header section (start line included, final CRLFCRLF excluded).
    Exactly one, well-formed value is required on a stream (RFC 3261 §18.3, SECURITY 3-5)."""
    values: list[bytes] = []
    last: int = -1
    for line in block.split(b"\r\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            # RFC 3261 §7.3.1 folding: continues the previous header line.
            if last >= 0:
                values[last] = (values[last] + b" " + line.strip(b" \t")).strip(b" \t")
            continue
        last = -1
        colon = line.find(b":")
        if colon <= 0:
            continue  # parse_message rejects it; framing only needs the length
        name = line[:colon].rstrip(b" \t").lower()
        if name in (b"content-length", b"l"):
            values.append(line[colon + 1 :].strip(b" \t"))
            last = len(values) - 1
    if not values:
        raise ParseError("Content-Length is mandatory on stream transports")
    if len(values) > 1:
        raise ParseError("duplicate Content-Length")
    if _CONTENT_LENGTH_RE.fullmatch(values[0]) is None:
        raise ParseError("malformed Content-Length")
    return int(values[0])


class StreamFramer:
    """Cut a byte stream into SIP messages and keep-alives.

    `feed(data)` returns the frames completed by `data`, in order: `bytes` for a message (start
    line to end of body) and `KeepAlive.PING`/`PONG` for CRLFCRLF / CRLF between messages.
    Data may be split at any byte. A missing or bad Content-Length, a header section over
    `max_header_block_bytes`, a body over `max_body_bytes` or a message over
    `max_message_bytes` raises `ParseError`/`MessageTooLarge`: close the connection.

    A lone CRLF at the end of the buffer is held until the next byte shows whether it is a
    pong or the start of a ping. The search for the end of the header section resumes where
    it stopped, so a slow sender costs O(n) in total."""

    __slots__ = ("_buf", "_failed", "_limits", "_need", "_scan")

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._scan = 0
        self._need = -1
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed:
            raise ParseError("stream framing already failed")
        try:
            return self._feed(data)
        except ParseError:
            self._failed = True
            self._buf.clear()
            raise

    def _feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        limits = self._limits
        while buf:
            need = self._need
            if need < 0:
                if self._scan == 0 and buf[:1] == b"\r":
                    # At a message boundary: RFC 5626 §3.5.1 keep-alives.
                    if buf[:4] == b"\r\n\r\n":
                        del buf[:4]
                        out.append(KeepAlive.PING)
                        continue
                    size = len(buf)
                    if size < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                        break  # wait: CR, CRLF or CRLFCR could still become a ping
                    if buf[:2] == b"\r\n":
                        del buf[:2]
                        out.append(KeepAlive.PONG)
                        continue
                end = buf.find(b"\r\n\r\n", max(self._scan - 3, 0))
                if end < 0:
                    if len(buf) > limits.max_header_block_bytes:
                        raise MessageTooLarge("header section too large")
                    self._scan = len(buf)
                    break
                if end + 4 > limits.max_header_block_bytes:
                    raise MessageTooLarge("header section too large")
                block = bytes(buf[:end])
                try:
                    length = _content_length(block)
                    if length > limits.max_body_bytes:
                        raise MessageTooLarge("body too large")
                    need = end + 4 + length
                    if need > limits.max_message_bytes:
                        raise MessageTooLarge("message too large")
                except ParseError as error:
                    # The header section is whole: the reply can still be routed (§8.2.6).
                    recovered = recover_headers(block, limits)
                    if recovered is not None:
                        error.routable = True
                        error.headers = recovered
                    raise
                self._need = need
            if len(buf) < need:
                break
            out.append(bytes(buf[:need]))
            del buf[:need]
            self._need = -1
            self._scan = 0
        return out
