"""`Server`: sipguard's listeners around one core, from start through reloads to a drained stop.

Owns: `Server`: its listeners (`Listeners`) wired to the core through the dispatcher, the
core's heartbeat, the shared state's bridge, the reload (refused on a change of the shared state
or an unusable TLS file; else new sockets staged, the core reconfigured, then the swap committed,
or undone when anything before it failed), the drain and the stop; and the shutdown's pacing
(`QUIET_PERIOD`, `CLOSE_WAIT`).

Never does: SIP decisions (the core's), open a socket itself (`sipguard.server.listeners`),
signals or exit codes (`sipguard.server.signals`, `.run`), per-packet logging (the observer logs
decisions).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from typing import Any

from sipguard.errors import ConfigError
from sipguard.proxy.actions import Address
from sipguard.server.listeners import ListenerError, Listeners
from sipguard.server.notes import describe_error
from sipguard.server.tls import client_context, server_context
from sipguard.server.tuning import reserved_sources, stream_limits, tick_interval
from sipguard.settings import Listener, Settings
from sipguard.sip.framing import StreamFramer
from sipguard.state import open_state
from sipguard.state.bridge import StateBridge
from sipguard.transport import CoreProtocol, NullObserver, ObserverProtocol
from sipguard.transport.dispatch import Dispatcher

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
        worker: int = 0,
    ) -> None:
        """`client_tls` replaces the context built from the settings for TLS upstreams (tests
        use it to trust a throw-away CA); None builds one that verifies (see transport.upstream).
        `reuse_port`: every listener with SO_REUSEPORT (a worker of `workers: N`); `worker`: its
        index (0 for a lone daemon), which picks its upstream-facing port."""
        self.settings = settings
        self.core = core
        self.observer: ObserverProtocol = observer if observer is not None else NullObserver()
        self._client_tls_override = client_tls
        self.dispatcher = Dispatcher(
            core,
            self.observer,
            self._new_framer,
            stream_limits(settings),
            client_tls=client_tls,
        )
        self.dispatcher.streams.reserved = reserved_sources(settings)
        self.listeners = Listeners(
            self.dispatcher, self.observer, reuse_port=reuse_port, worker=worker
        )
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
        return {listener: bound.address for listener, bound in self.listeners.bound.items()}

    def address_of(self, transport: str) -> Address:
        """The first open listener of a transport (convenience for tests and tools)."""
        for listener, bound in self.listeners.bound.items():
            if listener.transport == transport:
                return bound.address
        raise LookupError(f"no {transport} listener")

    async def start(self) -> None:
        """Bind every listener, then report `started`. Raises ListenerError (nothing is left
        open) or ConfigError (TLS files unusable)."""
        server_tls = server_context(self.settings)
        self.dispatcher.connector.tls = client_context(self.settings, self._client_tls_override)
        await self.listeners.open(self.settings, server_tls)
        self.core.use_upstream_sockets([e.local for e in self.listeners.upstream_udp.values()])
        if self.settings.state.backend != "memory":
            await self._share_state()
        self._tick = asyncio.get_running_loop().create_task(self._heartbeat())
        self.observer.started([listener.url for listener in self.listeners.bound])

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
        self.listeners.stop_accepting()
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
        self.listeners.close()
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
            client_tls = client_context(settings, self._client_tls_override)
        except ConfigError as exc:
            return exc.problems
        reserved = reserved_sources(settings)
        try:
            staged = await self.listeners.stage(settings, server_tls)
        except ListenerError as exc:
            self.observer.listener_error(exc.listener, exc.detail)
            return [f"{settings.source}: {exc.key}: {exc.listener}: {exc.detail}"]
        try:
            self.core.reconfigure(settings)
        except BaseException:  # a defect in the core, or cancelled by the shutdown
            self.listeners.undo(staged)
            raise
        self.core.use_upstream_sockets([e.local for e in staged.upstream_udp.values()])
        self.listeners.commit(staged)
        self.settings = settings
        self.dispatcher.streams.limits = stream_limits(settings)
        self.dispatcher.streams.reserved = reserved
        self.dispatcher.connector.tls = client_tls
        return []

    async def _hurried(self, delay: float) -> bool:
        """Wait `delay` seconds or until `hurry()`; whether we were hurried."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._hurry.wait()
        return self._hurry.is_set()

    def _new_framer(self) -> StreamFramer:
        return StreamFramer(self.core.parser_limits)

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


def _load(path: str) -> Settings:
    from sipguard.config import load_settings

    return load_settings(path)
