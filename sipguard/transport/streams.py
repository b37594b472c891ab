"""The table of live TCP and TLS connections, the bounds they live under, and the server-side
TLS context.

Owns: `Streams` (every open connection by id and by peer, with the per-source and total caps on
inbound ones and the reserve kept for whitelisted sources, SECURITY-CASES 5, 6, 9),
`server_tls_context`. One connection's own life (framing, timers) is `transport.stream`, its
TLS `transport.stream_tls`, the bounds both apply `transport.stream_limits`.

Never does: SIP decisions, I/O of its own (connections do theirs), logging per message.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from sipguard.proxy.actions import Address, Transport
from sipguard.transport import Framer, MessageSink, ObserverProtocol
from sipguard.transport.stream import StreamConnection
from sipguard.transport.stream_limits import ReservedSource, StreamLimits

__all__ = ["Streams", "server_tls_context"]

PeerKey = tuple[Transport, str, int]


class Streams:
    """Every live stream connection, by id and by peer, and the caps on inbound ones.

    `reserved` (None: no source is reserved, every source may use the whole cap) says whether
    a socket peer address may use the connections kept back from the others; the server sets it
    from the config and replaces it on reload. Connections keep the class they were admitted
    with until they close."""

    def __init__(
        self,
        sink: MessageSink,
        observer: ObserverProtocol,
        framer_factory: Callable[[], Framer],
        limits: StreamLimits,
        *,
        reserved: ReservedSource | None = None,
    ) -> None:
        self.sink = sink
        self.observer = observer
        self.framer_factory = framer_factory
        self.limits = limits
        self.reserved = reserved
        self.by_id: dict[int, StreamConnection] = {}
        self.by_peer: dict[PeerKey, StreamConnection] = {}
        self._per_source: dict[str, int] = {}
        self._inbound = 0
        self._unreserved = 0  # inbound connections from sources that are not reserved
        self.outbound = 0
        self.refused = 0  # inbound connections cut at once by a cap
        self._next_id = 0

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def protocol_factory(
        self,
        kind: Transport,
        local: Address,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
    ) -> Callable[[], StreamConnection]:
        """What `loop.create_server` calls for each accepted connection of a listener. `tls`
        returns the server context current at accept time (a reload may replace it)."""

        def make() -> StreamConnection:
            return StreamConnection(self, kind, local, tls=tls)

        return make

    def admit(self, connection: StreamConnection) -> bool:
        """Register an inbound connection unless it is over the total or per-source cap, or,
        for a source that is not reserved, over the share left once the reserve is kept (a
        refusal is counted in `refused`: the connection will be cut at once)."""
        host = connection.peer.host
        count = self._per_source.get(host, 0)
        limits = self.limits
        if self._inbound >= limits.max_connections or count >= limits.max_connections_per_source:
            self.refused += 1
            return False
        reserved = self.reserved
        if reserved is None or not reserved(host):
            if (
                reserved is not None
                and self._unreserved >= limits.max_connections - limits.reserved_connections
            ):
                self.refused += 1  # SECURITY-CASES 9: the rest is kept for whitelisted sources
                return False
            self._unreserved += 1
        else:
            connection.reserved = True
        self._per_source[host] = count + 1
        self._inbound += 1
        self._register(connection)
        return True

    def add_outbound(self, connection: StreamConnection) -> bool:
        """Register an outbound connection unless `max_connections` of them are open already
        (the core decides where to forward; this only bounds what it can make us hold)."""
        if self.outbound >= self.limits.max_connections:
            return False
        self.outbound += 1
        self._register(connection)
        return True

    def remove(self, connection: StreamConnection) -> None:
        if self.by_id.pop(connection.id, None) is None:
            return
        peer = connection.peer
        key = (peer.transport, peer.host, peer.port)
        if self.by_peer.get(key) is connection:
            del self.by_peer[key]
        if connection.outbound:
            self.outbound -= 1
        else:
            self._inbound -= 1
            if not connection.reserved:
                self._unreserved -= 1
            left = self._per_source[peer.host] - 1
            if left:
                self._per_source[peer.host] = left
            else:
                del self._per_source[peer.host]

    def find(self, connection: int | None, to: Address) -> StreamConnection | None:
        """The connection named by id if still usable, else any usable one to `to`."""
        if connection is not None:
            found = self.by_id.get(connection)
            if found is not None and found.is_usable:
                return found
        found = self.by_peer.get((to.transport, to.host, to.port))
        if found is not None and found.is_usable:
            return found
        return None

    def __len__(self) -> int:
        return len(self.by_id)

    def close_all(self) -> None:
        for connection in list(self.by_id.values()):
            connection.close()

    def abort_all(self) -> None:
        for connection in list(self.by_id.values()):
            connection.abort()

    def _register(self, connection: StreamConnection) -> None:
        self.by_id[connection.id] = connection
        peer = connection.peer
        self.by_peer[(peer.transport, peer.host, peer.port)] = connection


def server_tls_context(
    certificate: str,
    private_key: str,
    *,
    ca_file: str | None = None,
    verify_client: bool = False,
) -> ssl.SSLContext:
    """Server side of RFC 3261 §26.3.1 / RFC 5630: TLS 1.2 at least, our chain and key, and
    client certificates required (and verified against `ca_file`) when `verify_client`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, private_key)
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    if verify_client:
        context.verify_mode = ssl.CERT_REQUIRED
    return context
