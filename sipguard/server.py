"""The running daemon: listeners, signals, reload, graceful shutdown, the core's heartbeat.

Owns: `run_from_file` (what `sipguard run --config FILE` does, with its exit codes), `Server`
(binds every configured listener, wires transports to the core through the dispatcher, reloads,
stops), and the observer interface (`ObserverProtocol`, `NullObserver`, defined in
`sipguard.transport` so that transports can report too, re-exported here).

Process contract:
- exit 78 (EX_CONFIG) with every problem on stderr when the config is unusable;
- exit 71 (EX_OSERR) with a message naming the listener when one cannot be bound (port in use);
- SIGTERM/SIGINT: stop accepting, let in-flight work finish within `limits.shutdown_grace`,
  close connections, exit 0. A second SIGTERM/SIGINT during that drain ends the wait at once
  (connections are aborted, still exit 0): the operator who asks twice does not want to wait;
- SIGHUP: load the file off to the side; on success apply it (core.reconfigure, listeners added
  or removed, TLS certificates reloaded for new connections), on failure - a refused file or
  any error while loading or applying it - keep running unchanged and report the problems
  (DESIGN §3: a bad new file keeps the old config running; sd_notify(3): READY=1 follows
  RELOADING=1 whatever the outcome);
- the handlers for all three are installed before anything can send READY=1 and stay until the
  shutdown is complete: systemd may signal the moment it reads READY=1 (`Type=notify-reload`,
  `systemctl reload`), and logrotate may SIGHUP during a drain. A SIGTERM/SIGINT that arrives
  while starting is acted on once the listeners are up (stop at once); a SIGHUP while starting
  reloads once started; a SIGHUP while stopping is ignored (logged `signal_ignored`).

Never does: SIP decisions (the core's), per-packet logging (the observer logs decisions).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sipguard.errors import ConfigError
from sipguard.exits import EX_CONFIG, EX_OK, EX_OSERR
from sipguard.policy.whitelist import RuleSet, parse_rule
from sipguard.proxy.actions import Address, Transport
from sipguard.settings import Listener, Settings
from sipguard.sip.framing import StreamFramer
from sipguard.state import open_state
from sipguard.state.bridge import StateBridge
from sipguard.transport import CoreProtocol, NullObserver, ObserverProtocol, family_of
from sipguard.transport.dispatch import Dispatcher
from sipguard.transport.streams import (
    QUEUED_MESSAGES,
    ReservedSource,
    StreamLimits,
    server_tls_context,
)
from sipguard.transport.udp import UdpEndpoint, bind_udp, source_address_toward
from sipguard.transport.upstream import client_tls_context

__all__ = [
    "ListenerError",
    "NullObserver",
    "ObserverProtocol",
    "Server",
    "StderrObserver",
    "describe_error",
    "reserved_sources",
    "run_from_file",
    "stream_limits",
    "tick_interval",
]

TICK_INTERVAL = 1.0  # seconds between core.tick calls (bans, table expiry)...
MIN_TICK_INTERVAL = 0.05  # ...or less: the upstream pool's timers need a quarter of their period
LISTEN_BACKLOG = 1024  # pending TCP accepts per listener: absorbs a reconnect storm
# Shutdown: without a transaction count from the core, in-flight work is taken as finished once
# no message has been handled for this long (a SIP transaction step is a round trip).
QUIET_PERIOD = 0.5
CLOSE_WAIT = 1.0  # seconds for connections to flush on shutdown before they are aborted
# A reload error that is not a ConfigError is reported by type and message; the message is cut
# so that a pathological one cannot flood the log (secrets never reach exception messages: the
# config loader names files and keys, never their content).
MAX_ERROR_CHARS = 300


class ListenerError(Exception):
    """A listener could not be opened. `listener` is its URL (`tcp://127.0.0.1:5060`)."""

    def __init__(self, listener: str, detail: str) -> None:
        self.listener = listener
        self.detail = detail
        super().__init__(f"{listener}: {detail}")


def stream_limits(settings: Settings) -> StreamLimits:
    """The stream bounds from the config (`limits`, and `tls.handshake_timeout` when set)."""
    limits = settings.limits
    handshake = limits.tls_handshake_timeout
    if settings.tls is not None:
        handshake = min(handshake, settings.tls.handshake_timeout)
    return StreamLimits(
        read_deadline=limits.read_deadline,
        idle_timeout=limits.idle_timeout,
        handshake_timeout=handshake,
        max_connections=limits.max_connections,
        max_connections_per_source=limits.max_connections_per_source,
        max_write_buffer=QUEUED_MESSAGES * limits.max_message_bytes,
        max_pending_bytes=QUEUED_MESSAGES * limits.max_message_bytes,
    )


def tick_interval(settings: Settings) -> float:
    """Seconds between two core ticks: TICK_INTERVAL, or a quarter of the shortest pool timer
    (failover_timeout, and probe_timeout / probe_interval when probing), so that a failover or
    a probe timeout is acted on within a quarter of its period; never below MIN_TICK_INTERVAL."""
    health = settings.upstream_health
    periods = [TICK_INTERVAL * 4, health.failover_timeout]
    if health.probe_interval > 0:
        periods += [health.probe_interval, health.probe_timeout]
    return max(MIN_TICK_INTERVAL, min(periods) / 4)


def reserved_sources(settings: Settings) -> ReservedSource | None:
    """Which socket peers may use the stream connections kept back from strangers
    (SECURITY-CASES 9): an address that a trunk's whitelist names (an empty whitelist names
    nobody: it admits any address, and so reserves nothing) or an upstream's address. None
    when the config names no address. IPv4-mapped peers match IPv4 entries (policy.whitelist).
    The whitelist entries come parsed (`settings.Rule`); an upstream's host is an IP literal."""
    rules = [rule for trunk in settings.trunks for rule in trunk.whitelist]
    for upstream in settings.upstream:
        with contextlib.suppress(ValueError):  # an IP literal by Upstream's contract
            rules.append(parse_rule(upstream.host))
    if not rules:
        return None
    return RuleSet(rules).__contains__


@dataclass(slots=True)
class _Bound:
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
        self._bound: dict[Listener, _Bound] = {}
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
        self._server_tls = _server_context(self.settings)
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
            server_tls = _server_context(settings)
            client_tls = self._client_context(settings)
        except ConfigError as exc:
            return exc.problems
        reserved = reserved_sources(settings)
        added = [x for x in settings.listen if x not in self._bound]
        removed = [x for x in self._bound if x not in settings.listen]
        opened: dict[Listener, _Bound] = {}
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

    def _undo(self, opened: dict[Listener, _Bound], upstream_udp: dict[str, UdpEndpoint]) -> None:
        """Close what a refused reload opened (never a socket the running config uses)."""
        for bound in opened.values():
            self._unbind(bound)
        for host, endpoint in upstream_udp.items():
            if self._upstream_udp.get(host) is not endpoint:
                self.dispatcher.remove_udp(endpoint)
                endpoint.close()

    def _unbind(self, bound: _Bound) -> None:
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

    async def _bind(self, listener: Listener) -> _Bound:
        loop = asyncio.get_running_loop()
        kind = Transport(listener.transport)
        try:
            if kind is Transport.UDP:
                sock = bind_udp(listener.host, listener.port, reuse_port=self.reuse_port)
                address = Address(kind, listener.host, sock.getsockname()[1])
                endpoint = UdpEndpoint(self.dispatcher, self.observer, sock, address)
                await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
                self.dispatcher.add_udp(endpoint)
                if listener.port != address.port:  # also reachable by the configured name
                    self.dispatcher.udp.setdefault(
                        Address(kind, listener.host, listener.port), endpoint
                    )
                return _Bound(listener, address, udp=endpoint)
            if kind is Transport.TLS and self._server_tls is None:
                raise ListenerError(listener.url, "a tls listener needs the tls section")
            sock = _bind_stream(listener.host, listener.port, self.reuse_port)
            address = Address(kind, listener.host, sock.getsockname()[1])
            factory = self.dispatcher.streams.protocol_factory(
                kind, address, self._current_tls if kind is Transport.TLS else None
            )
            server = await loop.create_server(factory, sock=sock)
            return _Bound(listener, address, server=server)
        except OSError as exc:
            raise ListenerError(listener.url, exc.strerror or str(exc)) from exc


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
            raise ListenerError(f"upstream {upstream.uri}", exc.strerror or str(exc)) from exc
    return list(hosts.values())


def _bind_stream(host: str, port: int, reuse_port: bool = False) -> socket.socket:
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


def _server_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.tls
    if tls is None or not any(x.transport == "tls" for x in settings.listen):
        return None
    try:
        return server_tls_context(
            tls.certificate,
            tls.private_key,
            ca_file=tls.ca_file,
            verify_client=tls.verify_client,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError([f"{settings.source}: tls: {exc}"]) from exc


def describe_error(exc: BaseException) -> str:
    """`Type: message` of an unexpected error, on one line and at most MAX_ERROR_CHARS."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _load(path: str) -> Settings:
    from sipguard.config import load_settings

    return load_settings(path)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when importable (≈4× the datagrams per CPU second, DESIGN §5), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


ObserverFactory = Callable[[Settings], ObserverProtocol]


class StderrObserver(NullObserver):
    """The fallback when `run_from_file` is given no observer: lifecycle events only, one line
    each on stderr (`sipguard: EVENT: detail`), never a per-message line."""

    def _say(self, event: str, detail: str = "") -> None:
        print(f"sipguard: {event}: {detail}" if detail else f"sipguard: {event}", file=sys.stderr)

    def started(self, listeners: Sequence[str]) -> None:
        self._say("started", " ".join(listeners))

    def listener_error(self, listener: str, detail: str) -> None:
        self._say("listener_error", f"{listener}: {detail}")

    def config_reloaded(self, settings: Any) -> None:
        self._say("config_reloaded", str(getattr(settings, "source", "")))

    def config_reload_failed(self, problems: list[str]) -> None:
        for problem in problems:
            self._say("config_reload_failed", problem)

    def stopping(self) -> None:
        self._say("stopping")


def run_from_file(path: str, *, observer_factory: ObserverFactory | None = None) -> int:
    """`sipguard run --config FILE`: serve until SIGTERM/SIGINT. Returns the exit code."""
    from sipguard.config import load_settings_with_warnings
    from sipguard.worker import WorkerRole, bind_to_supervisor

    try:
        settings, warnings = load_settings_with_warnings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    role = WorkerRole.from_environ()
    if settings.workers > 1 and role is None:
        from sipguard.supervisor import supervise

        return supervise(path, settings, warnings)
    if role is not None:
        if not bind_to_supervisor():
            return EX_OK  # the supervisor is gone already: nothing to serve for
        warnings = []  # the supervisor logged them once for the host
    observer = observer_factory(settings) if observer_factory is not None else StderrObserver()
    for warning in warnings:  # what check-config would say, e.g. no nonce key (issue 12)
        _note(observer, "warning", "config_warning", detail=warning)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_serve(path, settings, observer, role))


class _Phase(enum.Enum):
    STARTING = "starting"  # before the listeners are up (and before READY=1)
    SERVING = "serving"
    STOPPING = "stopping"  # from the first SIGTERM/SIGINT until stop() has returned


class _Signals:
    """What SIGTERM, SIGINT and SIGHUP mean in each phase of `_serve` (see the module docstring).

    Installed before the server starts, removed only after it stopped, so no signal ever meets
    its default action (which would kill the daemon with no shutdown and no exit code)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str, observer: Any) -> None:
        self.loop = loop
        self.path = path
        self.observer = observer
        self.phase = _Phase.STARTING
        self.stop = asyncio.Event()
        self.reload_pending = False
        self.server: Server | None = None
        self.reloads: set[asyncio.Task[list[str]]] = set()
        self.keep: asyncio.Server | None = None  # a worker's /metrics for its supervisor

    def install(self) -> None:
        self.loop.add_signal_handler(signal.SIGTERM, self.on_stop, signal.SIGTERM)
        self.loop.add_signal_handler(signal.SIGINT, self.on_stop, signal.SIGINT)
        self.loop.add_signal_handler(signal.SIGHUP, self.on_reload)

    def remove(self) -> None:
        """Once stopped, the process only has to exit: a late SIGTERM/SIGHUP is ignored rather
        than given back its default action, which would turn a clean exit 0 into a kill."""
        for signum in self.SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError):
                self.loop.remove_signal_handler(signum)
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, signal.SIG_IGN)
        if self.keep is not None:
            self.keep.close()

    def on_stop(self, signum: signal.Signals) -> None:
        if self.phase is _Phase.STOPPING:
            # A second request to stop: stop waiting for the drain (still a clean exit 0).
            _note(self.observer, "warning", "stop_hastened", signal=signum.name)
            if self.server is not None:
                self.server.hurry()
            return
        self.stop.set()  # while starting: acted on as soon as the listeners are up

    def on_reload(self) -> None:
        if self.phase is _Phase.STOPPING:
            _note(self.observer, "warning", "signal_ignored", signal="SIGHUP", reason="stopping")
        elif self.phase is _Phase.STARTING or self.server is None:
            self.reload_pending = True  # reload the file once started
        else:
            self.reload()

    def serving(self, server: Server) -> None:
        """The listeners are up (READY=1 was sent): run what arrived while starting."""
        self.server = server
        self.phase = _Phase.SERVING
        if self.reload_pending and not self.stop.is_set():
            self.reload_pending = False
            self.reload()

    def reload(self) -> None:
        assert self.server is not None
        task = self.loop.create_task(self.server.reload_from_file(self.path))
        self.reloads.add(task)
        task.add_done_callback(self._reload_done)

    def _reload_done(self, task: asyncio.Task[list[str]]) -> None:
        self.reloads.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:  # pragma: no cover - reload_from_file reports its own errors
            _note(self.observer, "error", "bug", error=describe_error(error))

    async def stopping(self) -> None:
        """Leave SERVING: no reload from now on; one already running is cancelled (its new
        listeners are closed again) before the server stops."""
        self.phase = _Phase.STOPPING
        reloads = list(self.reloads)
        for task in reloads:
            task.cancel()
        await asyncio.gather(*reloads, return_exceptions=True)


async def _serve_worker_metrics(observer: Any, path: str) -> asyncio.Server | None:
    """A worker's /metrics, on the Unix socket the supervisor reads. The caller keeps the
    server (uvloop closes a listening server that is garbage-collected) and closes it."""
    from sipguard.metrics import serve_metrics_unix

    metrics = getattr(observer, "metrics", None)
    return None if metrics is None else await serve_metrics_unix(metrics, path)


def _note(observer: Any, level: str, event: str, **fields: Any) -> None:
    """A lifecycle line outside the observer's vocabulary: to its structlog logger when it has
    one (the JSON log of `sipguard run`), else one `sipguard: EVENT: k=v` line on stderr."""
    logger = getattr(observer, "logger", None)
    method = getattr(logger, level, None) if logger is not None else None
    if callable(method):
        method(event, **fields)
        return
    detail = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f"sipguard: {event}: {detail}" if detail else f"sipguard: {event}", file=sys.stderr)


async def _serve(
    path: str, settings: Settings, observer: ObserverProtocol, role: Any = None
) -> int:
    """Serve until stopped. `role`: a `sipguard.worker.WorkerRole` when started by the
    supervisor (listeners with SO_REUSEPORT, the host's nonce key, /metrics on its socket)."""
    from sipguard.proxy.core import Core

    signals = _Signals(asyncio.get_running_loop(), path, observer)
    # Before anything can send READY=1 (server.start() does, through the observer).
    signals.install()
    try:
        core = Core(
            settings,
            # A random key per process unless configured: nonces then die with the process.
            nonce_key=settings.auth.secret
            or (role.nonce_key if role is not None else None)
            or os.urandom(32),
            boot_id=os.urandom(8),
            started_at=time.time(),
        )
        server = Server(settings, core, observer=observer, reuse_port=role is not None)
        try:
            if role is not None and role.metrics_path is not None:
                signals.keep = await _serve_worker_metrics(observer, role.metrics_path)
            await server.start()
        except ListenerError as exc:
            print(f"sipguard: cannot listen on {exc.listener}: {exc.detail}", file=sys.stderr)
            return EX_OSERR
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return EX_CONFIG
        metrics = getattr(observer, "metrics", None)
        if metrics is not None:  # sipguard_trunk_calls_active, read at each scrape
            metrics.watch_trunk_calls(core.calls_active)
        admin = None
        # aiohttp is imported only then. Not in a worker of `workers: N`: its bans and reloads
        # would reach that worker alone (the supervisor says so once).
        if settings.admin is not None and role is None:
            from sipguard.admin.daemon import start_daemon_admin

            admin = await start_daemon_admin(server, core, observer, path, server.bridge)
        try:
            signals.serving(server)
            await signals.stop.wait()
        finally:
            await signals.stopping()
            if admin is not None:
                await admin.close()
            await server.stop()
            _note(observer, "info", "stopped")  # the drain is over: the last line before exit
        return EX_OK
    finally:
        signals.remove()
