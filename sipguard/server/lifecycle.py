"""`Server`: sipguard's listeners around one core, from start through reloads to a drained stop.

Owns: `Server` (binds every configured listener, wires transports to the core through the
dispatcher, ticks the core, plugs in the shared state's bridge, reloads, drains and stops), and
the shutdown's pacing (`QUIET_PERIOD`, `CLOSE_WAIT`).

Never does: SIP decisions (the core's), signals or exit codes (`sipguard.server.run` and
`.signals`), per-packet logging (the observer logs decisions).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from typing import Any

from sipguard.errors import ConfigError
from sipguard.proxy.actions import Address, Transport
from sipguard.server.listeners import (
    Bound,
    ListenerError,
    bind_stream,
    upstream_socket_hosts,
)
from sipguard.server.notes import describe_error
from sipguard.server.tls import server_context
from sipguard.server.tuning import reserved_sources, stream_limits, tick_interval
from sipguard.settings import Listener, Settings
from sipguard.sip.framing import StreamFramer
from sipguard.state import open_state
from sipguard.state.bridge import StateBridge
from sipguard.transport import CoreProtocol, NullObserver, ObserverProtocol
from sipguard.transport.dispatch import Dispatcher
from sipguard.transport.udp import UdpEndpoint, bind_udp
from sipguard.transport.upstream import client_tls_context

# Shutdown: without a transaction count from the core, in-flight work is taken as finished once
# no message has been handled for this long (a SIP transaction step is a round trip).
QUIET_PERIOD = 0.5
CLOSE_WAIT = 1.0  # seconds for connections to flush on shutdown before they are aborted


class Server:
    """sipguard's listeners around one core. `start`, then `reload` any number of times, then
    `stop`. The core is any object with the `CoreProtocol` methods (tests use doubles)."""

    def __init__(
        self,
        settings: Settings,
        core: CoreProtocol,
        *,
        observer: ObserverProtocol | None = None,
        client_tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        """`client_tls` replaces the context built from the settings for TLS upstreams (tests
        use it to trust a throw-away CA); None builds one that verifies (see transport.upstream).
        `reuse_port`: every listener with SO_REUSEPORT (a worker of `workers: N`)."""
        self.settings = settings
        self.reuse_port = reuse_port
        self.core = core
        self.observer: ObserverProtocol = observer if observer is not None else NullObserver()
        self._client_tls_override = client_tls
        self._server_tls: ssl.SSLContext | None = None
        self.dispatcher = Dispatcher(
            core,
            self.observer,
            self._new_framer,
            stream_limits(settings),
            client_tls=client_tls,
        )
        self.dispatcher.streams.reserved = reserved_sources(settings)
        self._bound: dict[Listener, Bound] = {}
        # Our own upstream-facing UDP sockets, by the local address they are bound to.
        self._upstream_udp: dict[str, UdpEndpoint] = {}
        self._tick: asyncio.Task[None] | None = None
        self._bridge: StateBridge | None = None
        self._reload_lock = asyncio.Lock()
        self._hurry = asyncio.Event()
        self.stopping = False
        self.stopped = asyncio.Event()

    # -- public ----------------------------------------------------------------------------

    @property
    def addresses(self) -> dict[Listener, Address]:
        """Every open listener and the address it is bound to (the real port for port 0)."""
        return {listener: bound.address for listener, bound in self._bound.items()}

    def address_of(self, transport: str) -> Address:
        """The first open listener of a transport (convenience for tests and tools)."""
        for listener, bound in self._bound.items():
            if listener.transport == transport:
                return bound.address
        raise LookupError(f"no {transport} listener")

    async def start(self) -> None:
        """Bind every listener, then report `started`. Raises ListenerError (nothing is left
        open) or ConfigError (TLS files unusable)."""
        self._server_tls = server_context(self.settings)
        self.dispatcher.connector.tls = self._client_context(self.settings)
        try:
            for listener in self.settings.listen:
                self._bound[listener] = await self._bind(listener)
            for host in upstream_socket_hosts(self.settings):
                self._upstream_udp[host] = await self._bind_upstream_udp(host)
        except ListenerError:
            for bound in self._bound.values():
                bound.close()
            self._bound.clear()
            for endpoint in self._upstream_udp.values():
                endpoint.close()
            self._upstream_udp.clear()
            raise
        self.core.use_upstream_sockets([e.local for e in self._upstream_udp.values()])
        if self.settings.state.backend != "memory":
            await self._share_state()
        self._tick = asyncio.get_running_loop().create_task(self._heartbeat())
        self.observer.started([listener.url for listener in self._bound])

    async def reload(self, settings: Settings) -> list[str]:
        """Apply a new config atomically: new listeners are bound first, and if one fails
        nothing changes. Returns the problems ([] when applied). Never raises: an unexpected
        error is a refused reload too (reported with its type and message)."""
        async with self._reload_lock:
            try:
                problems = await self._apply(settings)
            except Exception as exc:  # the shell's broad except: one reload, not the daemon
                problems = [f"{settings.source}: reload failed: {describe_error(exc)}"]
            if problems:
                self.observer.config_reload_failed(problems)
            else:
                self.observer.config_reloaded(settings)
            return problems

    async def reload_from_file(self, path: str) -> list[str]:
        """SIGHUP: read and validate `path` off the loop; apply it or report why not. Never
        raises (but can be cancelled): every outcome is `config_reloaded` or
        `config_reload_failed` after `reloading`, so systemd hears READY=1 after RELOADING=1."""
        self.observer.reloading()
        try:
            settings = await asyncio.get_running_loop().run_in_executor(None, _load, path)
        except ConfigError as exc:
            self.observer.config_reload_failed(exc.problems)
            return exc.problems
        except Exception as exc:  # a defect or an OS error the loader did not turn into words
            problems = [f"{path}: reload failed: {describe_error(exc)}"]
            self.observer.config_reload_failed(problems)
            return problems
        return await self.reload(settings)

    def hurry(self) -> None:
        """Cut a running `stop()` short: no more waiting for in-flight work or flushes."""
        self._hurry.set()

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, drain for at most `limits.shutdown_grace`, close.
        `hurry()` ends both waits at once."""
        if self.stopping:
            await self.stopped.wait()
            return
        self.stopping = True
        self.observer.stopping()
        loop = asyncio.get_running_loop()
        for bound in self._bound.values():
            if bound.server is not None:
                bound.server.close()  # no new connections; existing ones keep working
        grace_end = loop.time() + self.settings.limits.shutdown_grace
        while loop.time() < grace_end and not self._drained():
            if await self._hurried(0.05):
                break
        if self._tick is not None:
            self._tick.cancel()
        if self._bridge is not None:
            await self._bridge.close()
        self.dispatcher.close()
        streams = self.dispatcher.streams
        close_end = loop.time() + CLOSE_WAIT
        while len(streams) and loop.time() < close_end:
            if await self._hurried(0.02):
                break
        streams.abort_all()
        for bound in self._bound.values():
            bound.close()
        self._bound.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost callbacks
        self.stopped.set()

    # -- internals -------------------------------------------------------------------------

    @property
    def bridge(self) -> StateBridge | None:
        """The shared state's bridge, once started with a shared backend (else None)."""
        return self._bridge

    async def _share_state(self) -> None:
        """Shared state (DESIGN §7): the bridge takes the core's questions after every call."""
        state = open_state(self.settings.state)
        core: Any = self.core  # the Core: questions, shared_failures, apply_ban
        bridge = StateBridge(state, core, self.dispatcher.complete, self.observer)
        await bridge.start()
        self._bridge = bridge
        self.dispatcher.after_core = bridge.drain

    async def _apply(self, settings: Settings) -> list[str]:
        """The body of `reload`: problems, or [] once everything is swapped in. Whatever fails
        before `core.reconfigure` returned leaves the running config exactly as it was."""
        if settings.state != self.settings.state:
            return [f"{settings.source}: state: a change of the shared state needs a restart"]
        try:
            server_tls = server_context(settings)
            client_tls = self._client_context(settings)
        except ConfigError as exc:
            return exc.problems
        reserved = reserved_sources(settings)
        added = [x for x in settings.listen if x not in self._bound]
        removed = [x for x in self._bound if x not in settings.listen]
        opened: dict[Listener, Bound] = {}
        upstream_udp: dict[
            str, UdpEndpoint
        ] = {}  # the upstream-facing sockets the new config needs
        previous_tls, self._server_tls = self._server_tls, server_tls
        try:
            for listener in added:
                opened[listener] = await self._bind(listener)
            for host in upstream_socket_hosts(settings):
                kept = self._upstream_udp.get(host)
                upstream_udp[host] = kept or await self._bind_upstream_udp(host)
            self.core.reconfigure(settings)
        except ListenerError as exc:
            self._server_tls = previous_tls
            self._undo(opened, upstream_udp)
            self.observer.listener_error(exc.listener, exc.detail)
            return [f"{settings.source}: listen: {exc.listener}: {exc.detail}"]
        except BaseException:  # a defect in the core, or cancelled by the shutdown
            self._server_tls = previous_tls
            self._undo(opened, upstream_udp)
            raise
        self.core.use_upstream_sockets([e.local for e in upstream_udp.values()])
        for host, endpoint in self._upstream_udp.items():
            if host not in upstream_udp:
                self.dispatcher.remove_udp(endpoint)
                endpoint.close()
        self._upstream_udp = upstream_udp
        self.settings = settings
        self.dispatcher.streams.limits = stream_limits(settings)
        self.dispatcher.streams.reserved = reserved
        self.dispatcher.connector.tls = client_tls
        self._bound.update(opened)
        for listener in removed:
            self._unbind(self._bound.pop(listener))
        return []

    def _undo(self, opened: dict[Listener, Bound], upstream_udp: dict[str, UdpEndpoint]) -> None:
        """Close what a refused reload opened (never a socket the running config uses)."""
        for bound in opened.values():
            self._unbind(bound)
        for host, endpoint in upstream_udp.items():
            if self._upstream_udp.get(host) is not endpoint:
                self.dispatcher.remove_udp(endpoint)
                endpoint.close()

    def _unbind(self, bound: Bound) -> None:
        if bound.udp is not None:
            self.dispatcher.remove_udp(bound.udp)
        bound.close()

    async def _hurried(self, delay: float) -> bool:
        """Wait `delay` seconds or until `hurry()`; whether we were hurried."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._hurry.wait()
        return self._hurry.is_set()

    def _new_framer(self) -> StreamFramer:
        return StreamFramer(self.core.parser_limits)

    def _current_tls(self) -> ssl.SSLContext | None:
        return self._server_tls

    def _client_context(self, settings: Settings) -> ssl.SSLContext | None:
        if self._client_tls_override is not None:
            return self._client_tls_override
        if not any(u.transport == "tls" for u in settings.upstream):
            return None
        tls = settings.tls
        try:
            return client_tls_context(
                ca_file=tls.ca_file if tls else None,
                certificate=tls.certificate if tls else None,
                private_key=tls.private_key if tls else None,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError([f"{settings.source}: tls: {exc}"]) from exc

    def _drained(self) -> bool:
        """In-flight work is over: the core says so (optional `in_flight()`), or, lacking
        that, nothing was handled for QUIET_PERIOD and no outbound data waits."""
        in_flight: Callable[[], int] | None = getattr(self.core, "in_flight", None)
        if in_flight is not None:
            return in_flight() == 0
        return time.perf_counter() - self.dispatcher.last_message >= QUIET_PERIOD

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(tick_interval(self.settings))
            self.dispatcher.tick()

    async def _bind_upstream_udp(self, host: str) -> UdpEndpoint:
        """Our own UDP socket toward the upstreams of one address family, on an ephemeral port
        of `host`: it sends what goes to them and receives their responses and requests."""
        try:
            sock = bind_udp(host, 0)
        except OSError as exc:
            where = f"[{host}]" if ":" in host else host
            raise ListenerError(f"udp://{where}:0 (toward the upstream)", str(exc)) from exc
        endpoint = UdpEndpoint(
            self.dispatcher,
            self.observer,
            sock,
            Address(Transport.UDP, host, sock.getsockname()[1]),
        )
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, sock=sock)
        self.dispatcher.add_udp(endpoint)
        return endpoint

    async def _bind(self, listener: Listener) -> Bound:
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
            if kind is Transport.TLS and self._server_tls is None:
                raise ListenerError(listener.url, "a tls listener needs the tls section")
            sock = bind_stream(listener.host, listener.port, self.reuse_port)
            address = Address(kind, listener.host, sock.getsockname()[1])
            factory = self.dispatcher.streams.protocol_factory(
                kind, address, self._current_tls if kind is Transport.TLS else None
            )
            server = await loop.create_server(factory, sock=sock)
            return Bound(listener, address, server=server)
        except OSError as exc:
            raise ListenerError(listener.url, exc.strerror or str(exc)) from exc


def _load(path: str) -> Settings:
    from sipguard.config import load_settings

    return load_settings(path)
