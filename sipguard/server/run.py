"""`sipguard run --config FILE`: the process around one `Server`, from the file to an exit code.

Owns: `run_from_file`, with the process contract:
- exit 78 (EX_CONFIG) with every problem on stderr when the config is unusable;
- exit 71 (EX_OSERR) with a message naming the listener when one cannot be bound (port in use);
- SIGTERM/SIGINT: stop accepting, let in-flight work finish within `limits.shutdown_grace`,
  close connections, exit 0; SIGHUP: load the file off to the side; on success apply it
  (core.reconfigure, listeners added or removed, TLS certificates reloaded for new
  connections), on failure - a refused file or any error while loading or applying it - keep
  running unchanged and report the problems (DESIGN §3: a bad new file keeps the old config
  running; sd_notify(3): READY=1 follows RELOADING=1 whatever the outcome). What each signal
  means in each phase is `sipguard.server.signals`';
- the handlers for all three are installed before anything can send READY=1 and stay until the
  shutdown is complete: systemd may signal the moment it reads READY=1 (`Type=notify-reload`,
  `systemctl reload`), and logrotate may SIGHUP during a drain;
- `workers: N` (N > 1) hands the host to `sipguard.supervisor`; a worker it started serves with
  SO_REUSEPORT, the host's nonce key and its /metrics on the supervisor's socket.

Never does: SIP decisions (the core's), per-packet logging (the observer logs decisions).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sipguard.errors import ConfigError
from sipguard.exits import EX_CONFIG, EX_OK, EX_OSERR
from sipguard.server.lifecycle import Server
from sipguard.server.listeners import ListenerError
from sipguard.server.notes import StderrObserver, note
from sipguard.server.signals import Signals
from sipguard.settings import Settings
from sipguard.transport import ObserverProtocol

if TYPE_CHECKING:
    from sipguard.proxy.core import Core
    from sipguard.worker import WorkerRole


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when importable (≈4× the datagrams per CPU second, DESIGN §5), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


ObserverFactory = Callable[[Settings], ObserverProtocol]


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
        note(observer, "warning", "config_warning", detail=warning)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_serve(path, settings, observer, role))


async def _serve_worker_metrics(observer: Any, path: str) -> asyncio.Server | None:
    """A worker's /metrics, on the Unix socket the supervisor reads. The caller keeps the
    server (uvloop closes a listening server that is garbage-collected) and closes it."""
    from sipguard.metrics import serve_metrics_unix

    metrics = getattr(observer, "metrics", None)
    return None if metrics is None else await serve_metrics_unix(metrics, path)


async def _serve(
    path: str, settings: Settings, observer: ObserverProtocol, role: WorkerRole | None = None
) -> int:
    """Serve until stopped. `role`: set when started by the supervisor (listeners with
    SO_REUSEPORT, the host's nonce key, /metrics on its socket, its index: the offset of its
    upstream-facing port)."""
    signals = Signals(asyncio.get_running_loop(), path, observer)
    # Before anything can send READY=1 (server.start() does, through the observer).
    signals.install()
    try:
        core = _new_core(settings, role)
        server = Server(
            settings,
            core,
            observer=observer,
            reuse_port=role is not None,
            worker=role.index if role is not None else 0,
        )
        failed = await _start(server, signals, role)
        if failed is not None:
            return failed
        metrics = getattr(observer, "metrics", None)
        if metrics is not None:  # sipguard_trunk_calls_active, read at each scrape
            metrics.watch_trunk_calls(core.calls_active)
        admin = await _start_admin(server, core, path, role)
        # What startup built (modules, compiled patterns, the config) lives as long as the
        # process: kept out of the collector's full passes, which then walk only what traffic
        # builds (a full pass over the ~48,000 objects of startup paused the loop ~0.1 s).
        gc.freeze()
        try:
            signals.serving(server)
            await signals.stop.wait()
        finally:
            await signals.stopping()
            if admin is not None:
                await admin.close()
            await server.stop()
            note(observer, "info", "stopped")  # the drain is over: the last line before exit
        return EX_OK
    finally:
        signals.remove()


def _new_core(settings: Settings, role: WorkerRole | None) -> Core:
    from sipguard.proxy.core import Core

    return Core(
        settings,
        # A random key per process unless configured: nonces then die with the process.
        nonce_key=settings.auth.secret
        or (role.nonce_key if role is not None else None)
        or os.urandom(32),
        boot_id=os.urandom(8),
        started_at=time.time(),
    )


async def _start(server: Server, signals: Signals, role: WorkerRole | None) -> int | None:
    """Start `server` (a worker's /metrics first); the exit code when it cannot start."""
    try:
        if role is not None and role.metrics_path is not None:
            signals.keep = await _serve_worker_metrics(server.observer, role.metrics_path)
        if role is not None and role.control_path is not None:
            import sipguard.admin.daemon  # noqa: F401 (aiohttp loaded before READY=1)
        await server.start()
    except ListenerError as exc:
        print(f"sipguard: cannot listen on {exc.listener}: {exc.detail}", file=sys.stderr)
        return EX_OSERR
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    return None


async def _start_admin(server: Server, core: Core, path: str, role: WorkerRole | None) -> Any:
    """The admin API's routes, if any (aiohttp is imported only then); the caller closes them.
    A worker of `workers: N` serves them on its control socket only: its supervisor serves the
    admin listener for the host."""
    if role is not None and role.control_path is not None:
        from sipguard.admin.daemon import start_worker_control

        return await start_worker_control(
            server, core, server.observer, path, role.control_path, server.bridge
        )
    if server.settings.admin is not None and role is None:
        from sipguard.admin.daemon import start_daemon_admin

        return await start_daemon_admin(server, core, server.observer, path, server.bridge)
    return None
