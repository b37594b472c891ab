"""UDP listeners: one `asyncio.DatagramProtocol` per listening socket.

Owns: receiving datagrams (one call into the sink per datagram: no task, no queue, no log),
sending from the right socket, a bounded send buffer, and mapping ICMP errors (port or host
unreachable) back to the Forward that caused them, so the core can answer the client 503.

ICMP mapping: on Linux the socket has IP_RECVERR / IPV6_RECVERR set; the kernel then queues each
ICMP error with the original destination and the quoted start of our datagram, which we read
with MSG_ERRQUEUE and match against a small bounded table of recent Forwards per destination.
Elsewhere the error carries no address and is only reported.

Never does: SIP decisions, per-datagram logging, sending to multicast/broadcast/unspecified
addresses (the dispatcher checks before calling `send`).
RFC 3261 §18.1.1 and §18.2.1 (UDP), RFC 1122 §4.1.3.3 (ICMP reported to the application).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import sys
import time
from collections import deque
from typing import cast

from sipguard.proxy.actions import Address, Forward, Transport
from sipguard.transport import MessageSink, ObserverProtocol

__all__ = [
    "RECEIVE_BUFFER",
    "UNREACHABLE_REASONS",
    "UdpEndpoint",
    "bind_udp",
    "source_address_toward",
]

RECEIVE_BUFFER = 4 * 1024 * 1024  # absorbs bursts while the loop is busy (kernel may clamp it)
MAX_SEND_BUFFER = 4 * 1024 * 1024  # bytes asyncio may queue when the kernel buffer is full
RECENT_PER_DESTINATION = 16  # Forwards remembered per destination for ICMP matching
RECENT_DESTINATIONS = 4096  # destinations remembered; oldest forgotten first
REPORT_INTERVAL = 1.0  # seconds between two reports of socket errors of one listener
SOURCE_CACHE = 65536  # (host, port) -> Address objects kept to avoid rebuilding them

# Linux <linux/in.h>, <linux/in6.h>, <linux/errqueue.h>; not exported by the socket module.
IP_RECVERR = 11
IPV6_RECVERR = 25
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # ee_errno, origin, type, code, pad, info, data
# ICMP errors that say a datagram could not be delivered, and the bounded reason each is
# reported with (the `reason` label of `sipguard_peer_unreachable_total`).
UNREACHABLE_REASONS: dict[int, str] = {
    errno.ECONNREFUSED: "port_unreachable",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.EHOSTDOWN: "host_unreachable",
    errno.ENETUNREACH: "net_unreachable",
}
_LINUX = sys.platform.startswith("linux")


def bind_udp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket: IPv6 only on an IPv6 address, a large receive buffer,
    and ICMP errors queued with their addresses (Linux). `reuse_port`: SO_REUSEPORT, so that
    the workers of one host share the port (never on a worker's own upstream-facing socket).
    Raises OSError (e.g. port in use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # The kernel's rmem_max may refuse or clamp it: smaller is still correct.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if _LINUX:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def source_address_toward(host: str, port: int) -> str:
    """The local IP address the kernel's routing picks to reach `host` (an IP literal): the
    address an upstream-facing socket binds to and names in Via. A UDP `connect` sends nothing.
    Raises OSError when there is no route."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        local = str(probe.getsockname()[0])
    return local.split("%", 1)[0]  # a link-local zone: Address hosts carry none


class UdpEndpoint(asyncio.DatagramProtocol):
    """One UDP listener. `local` is its address (actual port when bound to port 0)."""

    def __init__(
        self, sink: MessageSink, observer: ObserverProtocol, sock: socket.socket, local: Address
    ) -> None:
        self.sink = sink
        self.observer = observer
        self.sock = sock
        self.local = local
        self.family = sock.family
        self.transport: asyncio.DatagramTransport | None = None
        self._receive = sink.receive
        self._sources: dict[tuple[str, int] | tuple[str, int, int, int], Address] = {}
        self._recent: dict[tuple[str, int], deque[Forward]] = {}
        # The datagram being handed to the kernel: an ICMP error queued by an earlier one is
        # returned by this sendto (IP_RECVERR sets the socket error), which then sends nothing;
        # error_received sends it again once the error is read (see `send`).
        self._sending: tuple[bytes, tuple[str, int]] | None = None
        self.dropped_sends = 0  # datagrams not sent: send buffer full or endpoint closed
        self.unmatched_errors = 0  # socket errors not traced to a Forward, since the last report
        self._last_report = float("-inf")

    # -- receiving -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's; they have the same methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # The hot path: one dict lookup, one call. No task, no queue, no log.
        source = self._sources.get(addr)
        if source is None:
            source = self._source(addr)
        self._receive(data, source, self.local, None)

    def _source(self, addr: tuple[str, int] | tuple[str, int, int, int]) -> Address:
        sources = self._sources
        if len(sources) >= SOURCE_CACHE:
            sources.clear()
        host = addr[0]
        if "%" in host:  # a link-local zone: Address hosts carry none
            host = host.split("%", 1)[0]
        source = sources[addr] = Address(Transport.UDP, host, addr[1])
        return source

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (RFC 1122 §4.1.3.3) or a failed sendto. Find which Forwards it concerns.
        retry, self._sending = self._sending, None
        try:
            self._report_errors(exc)
        finally:
            if retry is not None and self.transport is not None:
                # The error belonged to an earlier datagram (an upstream that is down): this
                # one was not sent. Once: a second failure is this datagram's own.
                self.transport.sendto(*retry)

    def _report_errors(self, exc: Exception) -> None:
        reported = False
        for destination, quoted, code in self._read_error_queue():
            reason = UNREACHABLE_REASONS.get(code)
            if reason is None:
                continue
            reported = True
            forward = self._match(destination, quoted)
            if forward is not None:
                self.sink.undeliverable(forward, os.strerror(code))
            else:
                # Ordinary traffic: a client that left before its reply arrived, a scanner
                # with a spoofed source. Counted and logged at debug, never a listener error.
                peer = Address(Transport.UDP, destination[0].split("%", 1)[0], destination[1])
                self.observer.peer_unreachable(peer, reason)
        if reported:
            return
        reason = UNREACHABLE_REASONS.get(getattr(exc, "errno", None) or 0)
        if reason is not None:  # an ICMP error whose address the platform did not give us
            self.observer.peer_unreachable(Address(Transport.UDP, "", 0), reason)
            return
        # ENOBUFS under load, and the like: counted, and reported at most once per
        # REPORT_INTERVAL, so that a flood of them cannot flood the log.
        self.unmatched_errors += 1
        now = time.monotonic()
        if now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            count, self.unmatched_errors = self.unmatched_errors, 0
            detail = f"{type(exc).__name__}: {exc} ({count} since the last report)"
            self.observer.listener_error(self.local_url, detail)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # -- sending ---------------------------------------------------------------------------

    def send(self, data: bytes, to: Address, forward: Forward | None = None) -> bool:
        """Queue one datagram toward `to`; False when it could not be (buffer full, closed)."""
        transport = self.transport
        # asyncio queues datagrams without bound when the kernel buffer is full: bound it.
        if transport is None or transport.get_write_buffer_size() > MAX_SEND_BUFFER:  # type: ignore[attr-defined]
            self.dropped_sends += 1
            return False
        destination = (to.host, to.port)
        self._sending = (data, destination)
        transport.sendto(data, destination)
        self._sending = None
        if forward is not None:  # remembered for ICMP matching (`_match`), here: once per Forward
            recent = self._recent.get(destination)
            if recent is None:
                recent = self._new_recent(destination)
            recent.append(forward)
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def local_url(self) -> str:
        host = f"[{self.local.host}]" if ":" in self.local.host else self.local.host
        return f"udp://{host}:{self.local.port}"

    # -- ICMP matching ---------------------------------------------------------------------

    def _new_recent(self, destination: tuple[str, int]) -> deque[Forward]:
        """Where the Forwards to a new `destination` are remembered (the last
        RECENT_PER_DESTINATION); the oldest destination is forgotten beyond RECENT_DESTINATIONS."""
        if len(self._recent) >= RECENT_DESTINATIONS:
            del self._recent[next(iter(self._recent))]
        recent = self._recent[destination] = deque(maxlen=RECENT_PER_DESTINATION)
        return recent

    def _match(self, destination: tuple[str, int], quoted: bytes) -> Forward | None:
        """The most recent Forward to `destination` whose bytes start with the quoted ones."""
        recent = self._recent.get(destination)
        if not recent:
            return None
        for index in range(len(recent) - 1, -1, -1):
            forward = recent[index]
            if forward.data.startswith(quoted):
                del recent[index]
                return forward
        return None

    def _read_error_queue(self) -> list[tuple[tuple[str, int], bytes, int]]:
        """Drain the socket's error queue: (original destination, quoted payload, errno)."""
        if not _LINUX or self.sock.fileno() < 0:
            return []
        found: list[tuple[tuple[str, int], bytes, int]] = []
        for _ in range(64):  # bounded: a flood of ICMP must not pin the loop
            try:
                quoted, ancillary, _flags, address = self.sock.recvmsg(
                    2048, 512, socket.MSG_ERRQUEUE
                )
            except OSError:
                break  # EAGAIN: the queue is empty
            code = 0
            for level, kind, payload in ancillary:
                if (level, kind) in (
                    (socket.IPPROTO_IP, IP_RECVERR),
                    (socket.IPPROTO_IPV6, IPV6_RECVERR),
                ) and len(payload) >= _EXTENDED_ERR.size:
                    ee_errno, origin, *_rest = _EXTENDED_ERR.unpack_from(payload)
                    if origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                        code = ee_errno
            if address:
                found.append(((address[0], address[1]), quoted, code))
        return found
