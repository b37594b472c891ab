"""The hot path to Redis: one connection, RESP written and read here, every command of one turn
of the event loop in one write.

Owns: `Wire`, an `asyncio.Protocol` on a connection that redis-py opened and set up (TLS, AUTH,
SELECT, Sentinel's master: everything `redis_store.connect` configures) and hands over through
`take_over`; the commands sent and the callbacks waiting for their replies, in order (Redis
answers a connection's commands in the order it received them, so a FIFO matches them); hiredis
packing and parsing; the one watchdog timer that bounds how long the oldest command waits.

Why: through redis-py's pool and pipeline a command costs ~700 Python function calls (task,
checkout, timeout context, retry wrapper, encoder, parser layers); here ~15 (pack, one write per
loop turn, feed, gets, callback). That is what keeps `state.backend: redis` within 25 % of the CPU
per call of `memory` (issue 15).

Owns also: `Link`, which opens a new `Wire` on the next call once the last one is closed.

Never does: reconnect by itself (the `Link` opens a new wire when this one is `closed`), raise to
the caller (a lost connection or a timeout answers every waiting command with `LOST`), call a
callback from inside `call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import hiredis
from redis.exceptions import RedisError

ReplyError = hiredis.ReplyError  # an error reply of the server (e.g. NOSCRIPT), handed as a value
# What every waiting command receives when the connection is lost or the server is too slow.
LOST: Final = ConnectionError("redis connection lost or too slow")

Reply = Callable[[Any], None]  # receives the decoded reply, a hiredis.ReplyError, or LOST


def pack(*args: bytes | str | int) -> bytes:
    """One command in RESP (an array of bulk strings), packed by hiredis."""
    # hiredis's stub types the argument as a 1-tuple; it packs a tuple of any length
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


class Wire(asyncio.Protocol):
    """One Redis connection used as a pipe: `call` queues a command and its callback; the
    commands of one loop turn leave in one write; replies are handed out in order."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        self._out: list[bytes] = []
        self._waiting: deque[Reply] = deque()
        # When each write left (monotonic) and how many replies it waits for, oldest first.
        self._sent: deque[list[float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    def take_over(self, transport: asyncio.Transport) -> None:
        """Receive this connection's bytes from now on (its previous protocol read every reply
        it asked for: nothing is buffered)."""
        self._transport = transport
        transport.set_protocol(self)
        if self._out:  # asked while the connection was being opened
            asyncio.get_running_loop().call_soon(self._flush)

    def call(self, command: bytes, then: Reply) -> None:
        """Send `command` (from `pack`) with the other commands of this loop turn; `then` gets
        its reply from the event loop."""
        if self.closed:
            asyncio.get_running_loop().call_soon(then, LOST)
            return
        self._waiting.append(then)
        self._out.append(command)
        if len(self._out) == 1 and self._transport is not None:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self.closed or self._transport is None or not self._out:
            return
        out, self._out = self._out, []
        self._transport.write(b"".join(out))
        self._sent.append([time.monotonic(), len(out)])
        if self._watchdog is None:
            self._arm()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting, sent = self._waiting, self._sent
        while (reply := self._reader.gets()) is not False:
            if not waiting or not sent:  # a reply nobody asked for: the stream is out of step
                self.close()
                return
            batch = sent[0]
            batch[1] -= 1
            if batch[1] == 0:
                sent.popleft()
            waiting.popleft()(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail()

    def _arm(self) -> None:
        """Wake up when the oldest write waiting for replies is `timeout` old."""
        late = self._sent[0][0] + self._timeout - time.monotonic()
        self._watchdog = asyncio.get_running_loop().call_later(max(late, 0.001), self._check)

    def _check(self) -> None:
        """A write unanswered for `timeout` means a stuck server: every waiter gets `LOST`."""
        self._watchdog = None
        if not self._sent:
            return
        if time.monotonic() - self._sent[0][0] >= self._timeout:
            self.close()
            return
        self._arm()

    def _fail(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting = self._waiting, deque()
        self._out.clear()
        self._sent.clear()
        loop = asyncio.get_running_loop()
        for then in waiting:
            loop.call_soon(then, LOST)


class Link:
    """The wire of one redis-py client: opened on first use with a connection of the client's
    pool (redis-py connects it: TLS, AUTH, SELECT, Sentinel's master), opened again on the next
    call after it is lost; `on_failed` hears a connection that could not be opened."""

    def __init__(
        self, client: Any, timeout: float, on_failed: Callable[[BaseException], None]
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._on_failed = on_failed
        self._wire: Wire | None = None
        self._conn: Any = None  # the redis-py connection the wire took over
        self._opening: asyncio.Task[None] | None = None

    def call(self, command: bytes, then: Reply) -> None:
        wire = self._wire
        if wire is None or wire.closed:
            wire = self._wire = Wire(self._timeout)
            self._opening = asyncio.get_running_loop().create_task(self._open(wire))
        wire.call(command, then)

    async def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        if self._wire is not None:
            self._wire.close()
        await self._release()

    async def _open(self, wire: Wire) -> None:
        """Give `wire` a connection set up by redis-py (the previous one is released first)."""
        await self._release()
        pool = self._client.connection_pool
        try:
            async with asyncio.timeout(self._timeout * 2):
                self._conn = await pool.get_connection()
            # redis-py set it up and read every reply it asked for: from now on `wire` reads it
            transport = self._conn._writer.transport
        except (RedisError, OSError, TimeoutError, AttributeError) as exc:
            self._on_failed(exc)
            wire.close()
            return
        wire.take_over(transport)

    async def _release(self) -> None:
        """Close the connection a previous wire took over and give it back to the pool, which
        reconnects it when it is next used."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await conn.disconnect(nowait=True)  # its stream protocol no longer hears the close
            await self._client.connection_pool.release(conn)
