"""One TCP or TLS connection, inbound or outbound.

Owns: `StreamConnection` (an `asyncio.Protocol`, not a StreamReader: one callback per read,
no task per connection once open): framing, keep-alives, its timers and its write bound; and
`Table`, what it asks of the table of connections (`transport.streams`, with the caps). Its
inbound TLS is `transport.stream_tls`, its bounds `transport.stream_limits`.

Rules it enforces (SECURITY-CASES 5, 6, 7, 9):
- RFC 3261 §18.3: messages are framed by Content-Length through the codec's framer; a framing
  violation (no Content-Length, header block or body over the caps) ends the connection: the
  boundary of the next message is unknowable, so nothing more is read from it.
- RFC 5626 §4.4.1: a CRLFCRLF ping is answered with one CRLF (pong); a lone CRLF is ignored.
- A message must arrive whole within `read_deadline` seconds of its first byte (slow-loris); a
  connection silent for `idle_timeout` seconds is closed; a TLS handshake must finish within
  `handshake_timeout`; over the per-source or total connection cap a new connection is aborted
  at once, before any TLS work (half-open handshakes count against the caps).
- Whitelisted sources still get service (SECURITY-CASES 9): `transport.streams` keeps
  `StreamLimits.reserved_connections` of the total for sources the `reserved` predicate names
  (the server builds it from the addresses that trunk whitelists and upstreams name); every
  other source shares the rest, so strangers that each stay under the per-source cap cannot
  lock a trunk out.
- A peer that does not read what we write is cut off when its write buffer passes a cap.

Never does: SIP decisions (the sink, i.e. the core, decides), logging per message.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from sipguard.errors import ParseError
from sipguard.proxy.actions import Address, Forward, Transport
from sipguard.sip.framing import KeepAlive
from sipguard.transport import Framer, MessageSink, ObserverProtocol
from sipguard.transport.stream_limits import StreamLimits
from sipguard.transport.stream_tls import Ending, MemoryTls

__all__ = ["CRLF", "State", "StreamConnection", "Table"]

CRLF = b"\r\n"  # RFC 5626 §4.4.1 pong


class Table(Protocol):
    """What a connection asks of the table it lives in (`transport.streams.Streams`)."""

    sink: MessageSink
    observer: ObserverProtocol
    limits: StreamLimits
    framer_factory: Callable[[], Framer]

    def new_id(self) -> int: ...

    def admit(self, connection: StreamConnection) -> bool: ...

    def remove(self, connection: StreamConnection) -> None: ...


class State(enum.Enum):
    CONNECTING = "connecting"  # outbound, TCP connect and TLS handshake in progress
    HANDSHAKING = "handshaking"  # inbound TLS handshake in progress
    OPEN = "open"
    CLOSING = "closing"  # close requested; nothing more is read or written
    CLOSED = "closed"


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection. Inbound ones are made by the listener's protocol factory,
    outbound ones by `Streams.outbound` (see `sipguard.transport.upstream`)."""

    def __init__(
        self,
        streams: Table,
        kind: Transport,
        local: Address,
        *,
        peer: Address | None = None,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
    ) -> None:
        self.streams = streams
        self.kind = kind
        self.local = local
        self.peer = peer if peer is not None else Address(kind, "", 0)
        self.id = streams.new_id()
        self.outbound = peer is not None
        self.state = State.CONNECTING if self.outbound else State.HANDSHAKING
        self.transport: asyncio.Transport | None = None
        self._tls = tls
        self._loop = asyncio.get_running_loop()
        self._framer = streams.framer_factory()
        self._deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_activity = self._loop.time()
        self._tls_session: MemoryTls | None = None  # inbound TLS (`transport.stream_tls`)
        self._pending: list[tuple[bytes, Forward | None]] = []  # queued while connecting
        self._pending_bytes = 0
        self._opened = False  # connection_opened was reported
        self.reserved = False  # admitted as a reserved source (counts against the reserve)
        self._handshake: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<StreamConnection #{self.id} {self.kind} {self.peer.host}:{self.peer.port}>"

    # -- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        transport = cast(asyncio.Transport, transport)
        if self.state is State.CLOSING or self.state is State.CLOSED:
            transport.abort()  # given up while connecting (shutdown)
            return
        self.transport = transport
        streams = self.streams
        if self.outbound:
            sockname = transport.get_extra_info("sockname")
            if sockname:
                self.local = Address(self.kind, sockname[0], sockname[1])
            self._open()
            self._flush_pending()
            return
        peername = transport.get_extra_info("peername")
        if not peername:  # the peer is already gone
            transport.abort()
            self.state = State.CLOSED
            return
        self.peer = Address(self.kind, peername[0], peername[1])
        if not streams.admit(self):
            # Over a cap: cut it before spending anything on it (SECURITY-CASES 9).
            self.state = State.CLOSED
            transport.abort()
            return
        context = self._tls() if self._tls is not None else None
        if context is None:
            self._open()
            return
        # The caps were checked before the TLS handshake, so half-open handshakes count too.
        self._tls_session = MemoryTls(context)
        self._handshake = self._loop.call_later(
            streams.limits.handshake_timeout, self._handshake_expired
        )

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        if self._tls_session is not None:
            self._tls_received(data)
        elif self.state is State.OPEN:
            self._feed(data)

    def eof_received(self) -> bool | None:
        # The peer will send nothing more; a half-received message can never complete.
        self.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def pause_writing(self) -> None:
        pass  # the write-buffer cap in send() handles peers that do not read

    def resume_writing(self) -> None:
        pass

    # -- sending ---------------------------------------------------------------------------

    def send(self, data: bytes, forward: Forward | None = None) -> bool:
        """Write `data`, or queue it while connecting. False when it cannot be delivered: the
        connection is closing or the queue is full (the caller reports a failed Forward)."""
        state = self.state
        if state is State.OPEN:
            transport = self.transport
            assert transport is not None
            self._write(transport, data)
            self._last_activity = self._loop.time()
            if transport.get_write_buffer_size() > self.streams.limits.max_write_buffer:
                # The peer does not read: memory would grow without bound.
                self.abort()
            return True
        if state is State.CONNECTING or state is State.HANDSHAKING:
            if self._pending_bytes + len(data) > self.streams.limits.max_pending_bytes:
                return False
            self._pending.append((data, forward))
            self._pending_bytes += len(data)
            return True
        return False

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    @property
    def is_usable(self) -> bool:
        return self.state is not State.CLOSING and self.state is not State.CLOSED

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading, flush what was written, then close (abort after `linger`)."""
        if not self.is_usable:
            return
        transport = self.transport
        if transport is None or self.state is State.CONNECTING:
            self.abort()
            return
        if self._tls_session is not None and self.state is State.OPEN:
            self._tls_session.close_notify()
            self._flush_tls()
        self.state = State.CLOSING
        self._cancel_timers()
        transport.close()
        # A peer that never reads would keep the socket forever: bound the flush.
        self._idle = self._loop.call_later(self.streams.limits.linger, self._abort_transport)

    def abort(self) -> None:
        """Close at once, discarding unsent data."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSING
        self._cancel_timers()
        self._abort_transport()
        if self.transport is None:
            self._finish()

    def connect_failed(self, detail: str) -> None:
        """An outbound connection could not be made: every queued Forward is undeliverable."""
        if self.state is State.CLOSED:
            return
        self._finish(detail or "connection failed")

    # -- internals -------------------------------------------------------------------------

    def _tls_received(self, data: bytes) -> None:
        """Inbound TLS (RFC 3261 §26.3.1): decrypt, then frame like TCP."""
        tls = self._tls_session
        assert tls is not None
        tls.receive(data)
        was_open = self.state is State.OPEN
        if self.state is State.HANDSHAKING:
            done = tls.handshake()
            self._flush_tls()  # the next flight, or the alert of a failed handshake
            if done is None:
                self.close()
            if not done:
                return
            if self._handshake is not None:
                self._handshake.cancel()
                self._handshake = None
            self._open()
            self._flush_pending()
        if self.state is not State.OPEN:
            return
        plaintext, ending = tls.read()
        if ending is Ending.BROKEN:
            self.abort()
            return
        if ending is Ending.CLOSED:
            self.close()
        self._flush_tls()  # TLS 1.3 tickets, key updates
        if plaintext and self.state is State.OPEN:
            self._feed(plaintext)
        if was_open and not plaintext and self._deadline is None and self.state is State.OPEN:
            # Bytes without plaintext are (nearly always) part of a record: half a record is
            # half a message, and trickling one is slow-loris too. The rare record without
            # data (a TLS 1.3 KeyUpdate) only costs a connection that stays silent afterwards.
            self._arm_deadline()

    def _write(self, transport: asyncio.Transport, data: bytes) -> None:
        tls = self._tls_session
        if tls is None:
            transport.write(data)
        else:
            tls.write(data)
            self._flush_tls()

    def _flush_tls(self) -> None:
        tls, transport = self._tls_session, self.transport
        if tls is not None and transport is not None:
            records = tls.records()
            if records:
                transport.write(records)

    def _handshake_expired(self) -> None:
        self._handshake = None
        if self.state is State.HANDSHAKING:
            self.abort()

    def _open(self) -> None:
        self.state = State.OPEN
        self._opened = True
        self.streams.observer.connection_opened(self.kind.value)
        self._arm_idle()

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        for data, forward in pending:
            if not self.send(data, forward) and forward is not None:
                self.streams.sink.undeliverable(forward, "connection closed before the write")

    def _feed(self, data: bytes) -> None:
        framer = self._framer
        try:
            items = framer.feed(data)
        except ParseError as exc:
            self._framing_failed(exc)
            return
        if items:
            self._cancel_deadline()
            sink = self.streams.sink
            for item in items:
                if self.state is not State.OPEN:
                    return
                if type(item) is bytes:
                    sink.receive(item, self.peer, self.local, self.id)
                elif item is KeepAlive.PING:
                    transport = self.transport
                    assert transport is not None
                    self._write(transport, CRLF)
                # KeepAlive.PONG: nothing to do (RFC 5626 §4.4.1)
            if self.state is not State.OPEN:
                return
        if not framer.buffered:
            self._cancel_deadline()
        elif self._deadline is None and (
            framer.buffered > 3 or (not items and data.strip(b"\r\n"))
        ):
            # RFC 3261 §18.3 sets no bound; SECURITY-CASES 6 does: a whole message within
            # read_deadline of its first byte, or the connection goes (slow-loris). A held
            # lone CRLF (pong or half a ping) starts no message and no clock.
            self._arm_deadline()

    def _arm_deadline(self) -> None:
        self._deadline = self._loop.call_later(
            self.streams.limits.read_deadline, self._deadline_expired
        )

    def _framing_failed(self, error: ParseError) -> None:
        # The core answers 400/513 when it can (SECURITY-CASES 3, 5, 7); `close` flushes that
        # answer, then nothing more is read or written.
        self.streams.sink.framing_failed(error, self.peer, self.local, self.id)
        self.close()

    def _deadline_expired(self) -> None:
        self._deadline = None
        if self.state is State.OPEN:
            self.abort()

    def _idle_check(self) -> None:
        self._idle = None
        if self.state is not State.OPEN and self.state is not State.HANDSHAKING:
            return
        remaining = self._last_activity + self.streams.limits.idle_timeout - self._loop.time()
        if remaining <= 0:
            self.close()
        else:
            self._idle = self._loop.call_later(remaining, self._idle_check)

    def _arm_idle(self) -> None:
        if self._idle is None:
            self._idle = self._loop.call_later(self.streams.limits.idle_timeout, self._idle_check)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_timers(self) -> None:
        self._cancel_deadline()
        if self._handshake is not None:
            self._handshake.cancel()
            self._handshake = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _abort_transport(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, failure: str = "connection lost before the write") -> None:
        """The end of a connection, whatever the way: idempotent."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._cancel_timers()
        streams = self.streams
        streams.remove(self)
        if self._opened:
            streams.observer.connection_closed(self.kind.value)
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        if self.outbound and pending:
            streams.observer.upstream_error(self.peer, failure)
        for _data, forward in pending:
            if forward is not None:
                streams.sink.undeliverable(forward, failure)
