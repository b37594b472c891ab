"""Outbound TCP/TLS connections: opened on demand when the core forwards over a stream to an
address with no open connection (the upstream, or a client whose connection has gone).

Owns: `Connector` (opens a `StreamConnection`, queues the data until connected, reports every
queued Forward as undeliverable when the connection fails) and the client TLS context.

TLS client policy (decided here, RFC 5630 §3 / RFC 3261 §26.2.1): TLS 1.2 at least; the upstream's
certificate is always verified, including its IP address against the certificate (the upstream is
configured by IP literal, so `server_hostname` is that literal). Trust anchors: `tls.ca_file` when
configured (a private CA is the usual case), else the system store. When the server has a
certificate configured it is offered as our client certificate (mutual TLS upstreams). Turning
verification off is possible only in code (`client_tls_context(verify=False)`, used by loopback
tests), never from the config file.

Never does: SIP decisions, DNS (hosts are IP literals), retries (the core decides failover).
"""

from __future__ import annotations

import asyncio
import ssl

from sipguard.proxy.actions import Address, Transport
from sipguard.transport.stream import StreamConnection
from sipguard.transport.streams import Streams

__all__ = ["CONNECT_TIMEOUT", "Connector", "client_tls_context"]

# Seconds to establish a TCP connection to the upstream. Well under RFC 3261 Timer B/F (32 s):
# the client should get its 503 while it can still fail over.
CONNECT_TIMEOUT = 5.0


def client_tls_context(
    *,
    ca_file: str | None = None,
    certificate: str | None = None,
    private_key: str | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """The context used toward TLS upstreams (see the module docstring for the policy)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate is not None and private_key is not None:
        context.load_cert_chain(certificate, private_key)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Connector:
    """Opens outbound stream connections and keeps track of the connect tasks."""

    def __init__(
        self,
        streams: Streams,
        tls: ssl.SSLContext | None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.streams = streams
        self.tls = tls
        self.connect_timeout = connect_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self, to: Address) -> StreamConnection:
        """A new connection toward `to`, registered at once (so the next Forward to `to` queues
        on it) and connecting in the background. Its `send` queues until it is open."""
        local = Address(to.transport, "", 0)  # the local side is known once connected
        connection = StreamConnection(self.streams, to.transport, local, peer=to)
        if not self.streams.add_outbound(connection):
            connection.connect_failed("too many outbound connections")
            return connection
        if to.transport is Transport.TLS and self.tls is None:
            connection.connect_failed("no TLS client context")
            return connection
        task = asyncio.get_running_loop().create_task(self._connect(connection, to))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return connection

    async def _connect(self, connection: StreamConnection, to: Address) -> None:
        loop = asyncio.get_running_loop()
        tls = self.tls if to.transport is Transport.TLS else None
        try:
            async with asyncio.timeout(
                self.connect_timeout + self.streams.limits.handshake_timeout
            ):
                await loop.create_connection(
                    lambda: connection,
                    to.host,
                    to.port,
                    ssl=tls,
                    server_hostname=to.host if tls is not None else None,
                    ssl_handshake_timeout=(
                        self.streams.limits.handshake_timeout if tls is not None else None
                    ),
                )
        except (OSError, TimeoutError) as exc:  # refused, unreachable, TLS failure, timeout
            connection.connect_failed(f"{type(exc).__name__}: {exc}".rstrip(": "))

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
