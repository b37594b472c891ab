"""The tiny HTTP endpoint that serves the metrics: `GET /metrics` and `GET /healthz`.

Owns: the answer to one request line (`answer_http`: 200 with the Prometheus text exposition
format 0.0.4, 404, 405, 400), reading a request head within bounds, and the asyncio servers on a
TCP port (`serve_http`) or a Unix socket (`serve_http_unix`) that answer one request per
connection with `Connection: close`. What it serves is a `Scrapable`: a `Metrics`, or the
supervisor's aggregate of its workers (`sipguard.aggregate`).

Never does: keep a connection open or wait without a deadline: a request head bigger than
`MAX_HTTP_REQUEST_BYTES` is refused, a slow one times out after `HTTP_READ_DEADLINE` (slow-loris),
and more than `MAX_HTTP_CONNECTIONS` at once are closed unanswered. Never interprets more of the
request than its request line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

# The classic text format: every Prometheus server reads it, and with names that are valid
# legacy names (all of ours) it is byte-identical to what generate_latest() writes.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# HTTP endpoint limits: Prometheus sends a ~200-byte request; anything much bigger is not a
# scraper. The deadline defeats slow-loris on the metrics port; the connection cap bounds memory.
MAX_HTTP_REQUEST_BYTES: Final = 8192
HTTP_READ_DEADLINE: Final = 5.0
MAX_HTTP_CONNECTIONS: Final = 32

_REASONS: Final[dict[int, str]] = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
}


def _http_response(status: int, body: bytes, content_type: str, head: bool = False) -> bytes:
    header = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return header if head else header + body


class Scrapable(Protocol):
    """What the endpoint serves: a `Metrics`, or the supervisor's aggregate of its workers."""

    def scrape(self) -> bytes: ...


def answer_http(metrics: Scrapable, request_line: bytes) -> bytes:
    """The whole HTTP response to one request line (the rest of the request is ignored)."""
    text = "text/plain; charset=utf-8"
    parts = request_line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _http_response(400, b"bad request\n", text)
    method, target, _ = parts
    if method not in (b"GET", b"HEAD"):
        return _http_response(405, b"method not allowed\n", text)
    head = method == b"HEAD"
    path = target.split(b"?", 1)[0]
    if path == b"/metrics":
        return _http_response(200, metrics.scrape(), CONTENT_TYPE, head)
    if path == b"/healthz":
        return _http_response(200, b"ok\n", text, head)
    return _http_response(404, b"not found\n", text, head)


async def _read_request_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request line, after reading (and discarding) the headers up to the blank line.

    The headers are read so that closing the socket does not reset the connection under unread
    bytes (which could make the client lose the response). None: too big or malformed."""
    request_line = await reader.readline()
    total = len(request_line)
    line = request_line
    while line not in (b"\r\n", b"\n", b""):
        line = await reader.readline()
        total += len(line)
        if total > MAX_HTTP_REQUEST_BYTES:
            return None
    return request_line if request_line.endswith(b"\n") else None


async def serve_http(respond: Responder, host: str, port: int) -> asyncio.Server:
    """The endpoint with another `respond` (request line -> whole response), e.g. the
    supervisor's, which reads its workers' series before it answers."""
    return await asyncio.start_server(
        _http_handler(respond), host, port, limit=MAX_HTTP_REQUEST_BYTES
    )


async def serve_http_unix(respond: Responder, path: str) -> asyncio.Server:
    """The same on a Unix socket: a worker's series, read by its supervisor (`workers: N`)."""
    return await asyncio.start_unix_server(
        _http_handler(respond), path, limit=MAX_HTTP_REQUEST_BYTES
    )


Responder = Callable[[bytes], Awaitable[bytes]]


def _http_handler(
    respond: Responder,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        active += 1
        try:
            if active > MAX_HTTP_CONNECTIONS:
                return
            try:
                request_line = await asyncio.wait_for(
                    _read_request_head(reader), HTTP_READ_DEADLINE
                )
            except TimeoutError:
                writer.write(_http_response(408, b"timeout\n", "text/plain; charset=utf-8"))
            except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                # readline() raises ValueError when a line exceeds the StreamReader limit
                writer.write(_http_response(400, b"bad request\n", "text/plain; charset=utf-8"))
            else:
                if request_line is None:
                    writer.write(_http_response(400, b"bad request\n", "text/plain; charset=utf-8"))
                else:
                    writer.write(await respond(request_line))
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.drain(), HTTP_READ_DEADLINE)
        except (OSError, TimeoutError):
            pass  # the scraper went away: nothing to answer
        finally:
            active -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), HTTP_READ_DEADLINE)

    return handle
