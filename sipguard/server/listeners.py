"""The sockets sipguard serves on, from start through reloads to stop.

Owns: `Listeners` (every configured listener and our own upstream-facing UDP sockets: bound at
start, a reload's new ones staged and then committed or undone, closed at stop; the server TLS
context new TLS connections take), `ListenerError` (a listener that cannot be opened, by its
URL), `Bound` (one open listener), `bind_stream` (a listening TCP socket with its options),
`upstream_socket_hosts` and `upstream_source_port` (where our upstream-facing sockets bind: the
address toward the upstream, `upstream_source_port` + the worker's index or an ephemeral port),
`LISTEN_BACKLOG`.

Never does: read or write SIP (the dispatcher's transports do), decide whether a reload is
applied (`Server.reload` does: a staged set is committed only once the core took the new
settings), close a socket the running config still uses when a reload is refused.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field

from sipguard.proxy.actions import Address, Transport
from sipguard.settings import Listener, Settings
from sipguard.transport import ObserverProtocol, family_of
from sipguard.transport.dispatch import Dispatcher
from sipguard.transport.udp import UdpEndpoint, bind_udp, source_address_toward

LISTEN_BACKLOG = 1024  # pending TCP accepts per listener: absorbs a reconnect storm


class ListenerError(Exception):
    """A listener could not be opened. `listener` is its URL (`tcp://127.0.0.1:5060`); `key`
    the config key that asked for it (`listen`, `upstream`, `upstream_source_port`)."""

    def __init__(self, listener: str, detail: str, key: str = "listen") -> None:
        self.listener = listener
        self.detail = detail
        self.key = key
        super().__init__(f"{listener}: {detail}")


@dataclass(slots=True)
class Bound:
    """One open listener."""

    listener: Listener
    address: Address  # with the port actually bound
    udp: UdpEndpoint | None = None
    server: asyncio.Server | None = None

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.server is not None:
            self.server.close()


@dataclass(slots=True)
class Staged:
    """What a reload opened for its `settings`, not in use yet: the listeners it adds, and every
    upstream-facing socket it needs (those it keeps included)."""

    settings: Settings
    previous_tls: ssl.SSLContext | None  # given back if the reload is undone
    opened: dict[Listener, Bound] = field(default_factory=dict)
    upstream_udp: dict[str, UdpEndpoint] = field(default_factory=dict)


class Listeners:
    """The open sockets of one server, each added to the dispatcher that sends from it."""

    def __init__(
        self, dispatcher: Dispatcher, observer: ObserverProtocol, *, reuse_port: bool, worker: int
    ) -> None:
        """`reuse_port`: every listener with SO_REUSEPORT (a worker of `workers: N`); `worker`:
        this process's index among them (0 for a lone daemon), the offset of its upstream-facing
        port from `upstream_source_port`."""
        self.dispatcher = dispatcher
        self.observer = observer
        self.reuse_port = reuse_port
        self.worker = worker
        self.server_tls: ssl.SSLContext | None = None  # what a new TLS connection takes
        self.bound: dict[Listener, Bound] = {}
        # Our own upstream-facing UDP sockets, by the local address they are bound to.
        self.upstream_udp: dict[str, UdpEndpoint] = {}

    async def open(self, settings: Settings, server_tls: ssl.SSLContext | None) -> None:
        """Bind every listener of `settings` and the upstream-facing sockets it needs. Raises
        ListenerError with nothing left open."""
        self.server_tls = server_tls
        try:
            for listener in settings.listen:
                self.bound[listener] = await self.bind(listener)
            port = upstream_source_port(settings, self.worker)
            for host in upstream_socket_hosts(settings):
                self.upstream_udp[host] = await self.bind_upstream_udp(host, port)
        except ListenerError:
            for bound in self.bound.values():
                bound.close()
            self.bound.clear()
            for endpoint in self.upstream_udp.values():
                endpoint.close()
            self.upstream_udp.clear()
            raise

    def stop_accepting(self) -> None:
        """No new stream connections; the open ones keep working."""
        for bound in self.bound.values():
            if bound.server is not None:
                bound.server.close()

    def close(self) -> None:
        """Close every listener (the dispatcher closes the upstream-facing sockets)."""
        for bound in self.bound.values():
            bound.close()
        self.bound.clear()

    async def stage(self, settings: Settings, server_tls: ssl.SSLContext | None) -> Staged:
        """Open what `settings` adds; new TLS connections take `server_tls` from now on. Raises
        (ListenerError, or cancelled) with everything it opened closed and the TLS given back."""
        staged = Staged(settings, self.server_tls)
        self.server_tls = server_tls
        try:
            for listener in settings.listen:
                if listener not in self.bound:
                    staged.opened[listener] = await self.bind(listener)
            port = upstream_source_port(settings, self.worker)
            for host in upstream_socket_hosts(settings):
                kept = self.upstream_udp.get(host)
                if kept is None or port not in (0, kept.local.port):
                    kept = await self.bind_upstream_udp(host, port)
                staged.upstream_udp[host] = kept
        except BaseException:
            self.undo(staged)
            raise
        return staged

    def commit(self, staged: Staged) -> None:
        """Swap `staged` in: close the upstream-facing sockets and the listeners that its
        settings no longer name (an upstream-facing socket moved to another port included)."""
        for host, endpoint in self.upstream_udp.items():
            if staged.upstream_udp.get(host) is not endpoint:
                self.dispatcher.remove_udp(endpoint)
                endpoint.close()
        self.upstream_udp = staged.upstream_udp
        removed = [x for x in self.bound if x not in staged.settings.listen]
        self.bound.update(staged.opened)
        for listener in removed:
            self.unbind(self.bound.pop(listener))

    def undo(self, staged: Staged) -> None:
        """Close what a refused reload opened (never a socket the running config uses)."""
        self.server_tls = staged.previous_tls
        for bound in staged.opened.values():
            self.unbind(bound)
        for host, endpoint in staged.upstream_udp.items():
            if self.upstream_udp.get(host) is not endpoint:
                self.dispatcher.remove_udp(endpoint)
                endpoint.close()

    def _upstream_error(self, host: str, port: int, exc: OSError) -> ListenerError:
        where = f"[{host}]" if ":" in host else host
        if port == 0:
            return ListenerError(f"udp://{where}:0 (toward the upstream)", str(exc), "upstream")
        return ListenerError(
            f"udp://{where}:{port} (toward the upstream, worker {self.worker})",
            f"{exc.strerror or exc}; worker N binds upstream_source_port + N: free the port or "
            "give upstream_source_port ports no other socket holds",
            "upstream_source_port",
        )

    def unbind(self, bound: Bound) -> None:
        if bound.udp is not None:
            self.dispatcher.remove_udp(bound.udp)
        bound.close()

    def current_tls(self) -> ssl.SSLContext | None:
        return self.server_tls

    async def bind_upstream_udp(self, host: str, port: int) -> UdpEndpoint:
        """Our own UDP socket toward the upstreams of one address family, on `port` of `host`
        (0: an ephemeral one): it sends what goes to them and receives their responses and
        requests. Neither SO_REUSEPORT nor SO_REUSEADDR: no other socket may share its port (a
        worker receives only its own responses; a sipguard still running makes the bind fail
        rather than split the traffic), and a UDP port is free again once its socket closed."""
        try:
            sock = bind_udp(host, port)
        except OSError as exc:
            raise self._upstream_error(host, port, exc) from exc
        endpoint = UdpEndpoint(
            self.dispatcher,
            self.observer,
            sock,
            Address(Transport.UDP, host, sock.getsockname()[1]),
        )
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, sock=sock)
        self.dispatcher.add_udp(endpoint)
        return endpoint

    async def bind(self, listener: Listener) -> Bound:
        loop = asyncio.get_running_loop()
        kind = Transport(listener.transport)
        try:
            if kind is Transport.UDP:
                sock = bind_udp(listener.host, listener.port, reuse_port=self.reuse_port)
                address = Address(kind, listener.host, sock.getsockname()[1])
                endpoint = UdpEndpoint(self.dispatcher, self.observer, sock, address)
                await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
                # also reachable by the configured name, should the bound port differ
                configured = Address(kind, listener.host, listener.port)
                self.dispatcher.add_udp(
                    endpoint, alias=configured if configured != address else None
                )
                return Bound(listener, address, udp=endpoint)
            if kind is Transport.TLS and self.server_tls is None:
                raise ListenerError(listener.url, "a tls listener needs the tls section")
            sock = bind_stream(listener.host, listener.port, self.reuse_port)
            address = Address(kind, listener.host, sock.getsockname()[1])
            factory = self.dispatcher.streams.protocol_factory(
                kind, address, self.current_tls if kind is Transport.TLS else None
            )
            server = await loop.create_server(factory, sock=sock)
            return Bound(listener, address, server=server)
        except OSError as exc:
            raise ListenerError(listener.url, exc.strerror or str(exc)) from exc


def upstream_source_port(settings: Settings, worker: int) -> int:
    """The port worker `worker`'s upstream-facing sockets bind: `upstream_source_port` + its
    index, or 0 (ephemeral) when the config gives none."""
    base = settings.upstream_source_port
    return 0 if base is None else base + worker


def upstream_socket_hosts(settings: Settings) -> list[str]:
    """Where sipguard's own upstream-facing UDP sockets bind: for each address family with a UDP
    upstream, the local address the routing table picks toward the first of them (the address
    our Via then names). Raises ListenerError when an upstream has no route."""
    hosts: dict[int, str] = {}
    for upstream in settings.upstream:
        family = family_of(upstream.host)
        if upstream.transport != "udp" or family in hosts:
            continue
        try:
            hosts[family] = source_address_toward(upstream.host, upstream.port)
        except OSError as exc:
            detail = exc.strerror or str(exc)
            raise ListenerError(f"upstream {upstream.uri}", detail, "upstream") from exc
    return list(hosts.values())


def bind_stream(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket: SO_REUSEADDR (restart while old connections sit in TIME_WAIT),
    IPv6 only on an IPv6 address (an IPv4 listener is configured separately), SO_REUSEPORT
    for the workers of one host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
