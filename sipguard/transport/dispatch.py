"""Executing the core's actions: the one place where received bytes meet the core.

Owns: `Dispatcher`, which hands every received message to `core.handle`, reports each resulting
action to the observer, and carries it out: a UDP datagram from the listener the action names
(or the first UDP listener of the same family), or a write on a stream connection (the one named,
else any open one to the destination, else, for a Forward only, a new outbound connection).
A Forward that cannot be delivered goes back to the core (`upstream_failed`), which answers.

The only broad `except Exception` of sipguard lives in `_contain` (and in `receive`, its hot-path
copy), around one message's handling (the core's work plus the execution of its actions): an
exception there is a defect, reported as `bug`, and the message is dropped while the listener
keeps serving (DESIGN §2).

Never does: SIP decisions; sending to multicast, broadcast or unspecified addresses
(SECURITY-CASES 16: refused and counted even though the core should never ask).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable

from sipguard.errors import ParseError
from sipguard.proxy.actions import Address, Drop, Forward, Reply, Transport
from sipguard.proxy.upstream_report import UpstreamReport
from sipguard.transport import CoreProtocol, Framer, ObserverProtocol, destination_family
from sipguard.transport.stream_limits import StreamLimits
from sipguard.transport.streams import Streams
from sipguard.transport.udp import UdpEndpoint
from sipguard.transport.upstream import Connector

__all__ = ["HOUSEKEEPING", "Dispatcher"]

# The "source" reported for failures that belong to no peer (the core's periodic tick).
HOUSEKEEPING = Address(Transport.UDP, "", 0)
# Forward -> undeliverable -> core.upstream_failed -> Forward ... is bounded (failover chains).
MAX_FAILOVER_DEPTH = 4


class Dispatcher:
    """Runs the core on what transports receive, and executes what it returns."""

    def __init__(
        self,
        core: CoreProtocol,
        observer: ObserverProtocol,
        framer_factory: Callable[[], Framer],
        limits: StreamLimits,
        *,
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.core = core
        self.observer = observer
        self.streams = Streams(self, observer, framer_factory, limits)
        self.connector = Connector(self.streams, client_tls)
        self.udp: dict[Address, UdpEndpoint] = {}
        # The same listeners by (host, port), what `_send_udp` looks up per datagram: a tuple of
        # str and int hashes in C, an Address (a dataclass) through two Python calls.
        self._udp_at: dict[tuple[str, int], UdpEndpoint] = {}
        self._udp_by_family: dict[int, list[UdpEndpoint]] = {}
        self._depth = 0
        self.last_message = 0.0  # perf_counter time of the last message handled (shutdown drain)
        # Counters a metrics layer may read; they are not SIP decisions.
        self.bugs = 0
        self.refused_destinations = 0
        self.unsent = 0
        # With shared state: takes the questions the core left (sipguard.state.bridge.drain).
        self.after_core: Callable[[Address, int | None], None] | None = None

    # -- listeners -------------------------------------------------------------------------

    def add_udp(self, endpoint: UdpEndpoint, *, alias: Address | None = None) -> None:
        """Send from `endpoint` what the core sends from its address, or from `alias` (the
        configured address of a listener, when its bound one differs) unless a listener has
        that one."""
        self._name_udp(endpoint.local, endpoint)
        if alias is not None and alias not in self.udp:
            self._name_udp(alias, endpoint)
        self._udp_by_family.setdefault(endpoint.family, []).append(endpoint)

    def _name_udp(self, address: Address, endpoint: UdpEndpoint) -> None:
        self.udp[address] = endpoint
        self._udp_at[address.host, address.port] = endpoint

    def remove_udp(self, endpoint: UdpEndpoint) -> None:
        """Forget `endpoint` under every address it was added with."""
        for address in [address for address, named in self.udp.items() if named is endpoint]:
            del self.udp[address]
            self._udp_at.pop((address.host, address.port), None)
        same = self._udp_by_family.get(endpoint.family, [])
        if endpoint in same:
            same.remove(endpoint)

    # -- MessageSink -----------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, local: Address, connection: int | None) -> None:
        """One message from a transport: core.handle, then its actions. The hot path: what
        `_contain` does, written out (no call through `*args` per message)."""
        start = self.last_message = time.perf_counter()
        try:
            results = self.core.handle(data, source, local, connection, time.time())
            self._execute(results, source, connection, time.perf_counter() - start)
        except Exception as exc:  # the one broad except, as in `_contain` (DESIGN §2)
            self.bugs += 1
            self.observer.bug(exc, source)

    def framing_failed(
        self, error: ParseError, source: Address, local: Address, connection: int
    ) -> None:
        """A stream lost its framing: the core decides (a 400/513 when the headers were
        recovered, counted either way); the connection closes afterwards in any case."""
        self._contain(
            source,
            connection,
            self.core.framing_error,
            error,
            source,
            local,
            connection,
            time.time(),
        )

    def undeliverable(self, forward: Forward, detail: str) -> None:
        """A Forward could not be delivered: the core answers (503 toward the client)."""
        self.observer.upstream_error(forward.to, detail)
        if self._depth >= MAX_FAILOVER_DEPTH:
            return
        self._depth += 1
        try:
            self._contain(forward.to, None, self.core.upstream_failed, forward, time.time())
        finally:
            self._depth -= 1

    def tick(self) -> None:
        """The core's housekeeping and timers (probes, failovers): what it returns is executed
        or reported. Not traffic: the shutdown drain waits for a quiet `last_message`."""
        last = self.last_message
        self._contain(HOUSEKEEPING, None, self.core.tick, time.time())
        self.last_message = last

    # -- execution -------------------------------------------------------------------------

    def complete(
        self,
        source: Address,
        connection: int | None,
        func: Callable[..., Iterable[object]],
        *args: object,
    ) -> None:
        """Run a core decision resumed later (shared state answered) like a received one."""
        self._contain(source, connection, func, *args)

    def _contain(
        self,
        source: Address,
        connection: int | None,
        func: Callable[..., Iterable[object]],
        *args: object,
    ) -> None:
        start = self.last_message = time.perf_counter()
        try:
            results = func(*args)
            self._execute(results, source, connection, time.perf_counter() - start)
        except Exception as exc:  # the one broad except: one message's failure (DESIGN §2)
            self.bugs += 1
            self.observer.bug(exc, source)

    def _execute(
        self,
        results: Iterable[object],
        source: Address,
        connection: int | None,
        elapsed: float,
    ) -> None:
        """Report and carry out what the core returned for one message (or tick), in order."""
        observer = self.observer
        for item in results:
            kind = type(item)
            if kind is Forward or kind is Reply:
                action: Forward | Reply = item  # type: ignore[assignment]
                observer.decision(action, source, elapsed)
                to = action.to
                family = destination_family(to.host)
                if not family or to.port == 0:
                    self.refused_destinations += 1
                    observer.upstream_error(to, "refused: not a unicast destination")
                elif to.transport is Transport.UDP:
                    self._send_udp(action, family)
                else:
                    self._send_stream(action)
            elif kind is Drop:
                drop: Drop = item  # type: ignore[assignment]
                observer.decision(drop, source, elapsed)
                if drop.close and connection is not None:
                    stream = self.streams.by_id.get(connection)
                    if stream is not None:
                        stream.close()
            elif kind is UpstreamReport:  # the tick's report of the upstream pool
                observer.upstream_report(item)
            else:  # the tick's events (bans)
                observer.banned(item)
        if self.after_core is not None:
            self.after_core(source, connection)

    def _send_udp(self, action: Forward | Reply, family: int) -> None:
        """From the listener the action names, else the first of `family` (the destination's)."""
        to = action.to
        local = action.local
        endpoint = self._udp_at.get((local.host, local.port)) if local is not None else None
        if endpoint is None or endpoint.family != family:
            same = self._udp_by_family.get(family)
            endpoint = same[0] if same else None
        forward = action if type(action) is Forward else None
        if endpoint is not None and endpoint.send(action.data, to, forward):
            return
        self.unsent += 1
        if forward is not None:
            detail = "no UDP listener of this family" if endpoint is None else "send buffer full"
            self.undeliverable(forward, detail)

    def _send_stream(self, action: Forward | Reply) -> None:
        to = action.to
        stream = self.streams.find(action.connection, to)
        is_forward = type(action) is Forward
        if stream is None:
            if not is_forward:
                # RFC 3261 §18.2.2 would have us open a connection to the sent-by; the core
                # asked for this connection or peer, and it is gone: the reply is lost.
                self.unsent += 1
                return
            stream = self.connector.open(to)
        forward: Forward | None = action if is_forward else None  # type: ignore[assignment]
        if not stream.send(action.data, forward):
            self.unsent += 1
            if forward is not None:
                self.undeliverable(forward, "connection closed before the write")

    # -- shutdown --------------------------------------------------------------------------

    def close(self) -> None:
        self.connector.cancel()
        for endpoint in list(self.udp.values()):
            endpoint.close()
        self.streams.close_all()
