"""The supervisor of `workers: N` (N > 1): N copies of the daemon on one host (issue 15).

Owns: starting the workers (`sipguard run` again, told its role by `sipguard.worker`'s
environment, the host's nonce key on stdin), following them, and the process contract of a
supervised host:
- every worker binds every listener with SO_REUSEPORT; the kernel spreads UDP datagrams (by
  source address and port) and TCP/TLS connections over them. Each worker sends upstream from
  a UDP socket of its own (never SO_REUSEPORT; `upstream_source_port` + its index, else an
  ephemeral port) named in its Via and Record-Route, so responses and in-dialog requests from
  the upstream come back to the worker holding them, after a restart of it too;
- READY=1 to systemd once every worker said READY=1 (each worker's NOTIFY_SOCKET is the
  supervisor's socket for it);
- SIGHUP: the file is validated here once; a refused file is logged (`config_reload_failed`)
  and nothing is signalled; an accepted one is SIGHUPed to every worker, and READY=1 follows
  once every worker answered its RELOADING=1 with READY=1 (or RELOAD_TIMEOUT passed). A change
  of `workers` is refused: it needs a restart;
- SIGTERM/SIGINT: SIGTERM to every worker, which drains as a lone daemon does; exit 0 once all
  exited (a worker still there after its `shutdown_grace` + STOP_MARGIN is killed). A second
  SIGTERM is passed on (the workers stop waiting);
- a worker that dies is logged (`worker_exited`: index, pid, exit code or signal) and started
  again after a back-off (`sipguard.restarts`: RESTART_DELAY doubling up to MAX_RESTART_DELAY,
  reset once it served STABLE_AFTER seconds), logged `worker_started`. Give-up rule
  (`sipguard.restarts.DeathRule`): more than MAX_DEATHS deaths within DEATH_WINDOW seconds (all
  workers together) stop every worker and exit 70 (EX_SOFTWARE). A worker that fails before the
  host was ever ready ends the start at once with its exit code (78 config, 71 port in use): a
  restart would not fix it;
- one /metrics on `metrics.listen` for the host (`sipguard.aggregate`);
- one admin API on `admin.listen` for the host (`sipguard.admin.host`): the same token, bounds
  and JSON as a lone daemon's, each request asked of every worker over its control socket (a
  Unix socket in the supervisor's private directory, given only when `admin` is configured at
  start). `POST /v1/reload` is the SIGHUP path below and answers its problems; with the admin
  API the workers are reloaded over their control sockets, so a worker's own errors come back.

Never does: handle SIP (the workers do), bind a SIP port, pass a secret through the
environment or a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sipguard.aggregate import AggregateEndpoint
from sipguard.endpoint import serve_http
from sipguard.errors import ConfigError
from sipguard.exits import EX_OK, EX_SOFTWARE
from sipguard.logs import configure_logging
from sipguard.notify import STOP_MARGIN, Notifier
from sipguard.restarts import DEATH_WINDOW, MAX_DEATHS, RESTART_DELAY, DeathRule, restart_delay
from sipguard.settings import Settings
from sipguard.worker import CONTROL_ENV, METRICS_ENV, SUPERVISOR_ENV, WORKER_ENV

RELOAD_TIMEOUT: Final = 30.0  # seconds to wait for every worker's READY=1 after SIGHUP
NOTIFY_MAX: Final = 4096  # bytes of one notification datagram


@dataclass(slots=True)
class _Worker:
    """One worker slot: its index, sockets, and the process now filling it."""

    index: int
    notify_path: str
    metrics_path: str
    control_path: str
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    delay: float = RESTART_DELAY / 2  # the first restart waits RESTART_DELAY
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reload_failed: bool = False


class Supervisor:
    """Runs `settings.workers` workers of the config file `path` until stopped."""

    def __init__(self, path: str, settings: Settings, logger: Any, workdir: str) -> None:
        self.path = path
        self.settings = settings
        self.logger = logger
        self.notifier = Notifier.from_environ()
        self.key = settings.auth.secret or os.urandom(32)
        self.workers = [
            _Worker(i, f"{workdir}/notify-{i}", f"{workdir}/metrics-{i}", f"{workdir}/control-{i}")
            for i in range(settings.workers)
        ]
        self.controlled = settings.admin is not None  # workers serve control sockets
        self.started = time.time()
        self._admin: Any = None  # the admin listener, once serving
        self.deaths = DeathRule()
        self.restarts = 0
        self.stopping = False
        self.done = asyncio.Event()
        self.exit_code = EX_OK
        self.serving = False
        self._socks: list[socket.socket] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._endpoint: asyncio.Server | None = None
        self._reload_lock = asyncio.Lock()

    # -- start ------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.on_stop)
        loop.add_signal_handler(signal.SIGINT, self.on_stop)
        loop.add_signal_handler(signal.SIGHUP, self.on_reload)
        for worker in self.workers:
            self._listen_notify(worker)
        self.logger.info("workers_starting", workers=len(self.workers), pid=os.getpid())
        for worker in self.workers:
            await self._spawn(worker)
            self._task(self._follow(worker))
        waiting = self._task(self._all_ready())
        await asyncio.wait([waiting, self._task(self.done.wait())], return_when="FIRST_COMPLETED")
        if not self.done.is_set():
            self.serving = True
            await self._open_endpoint(self.settings)
            if self.controlled:
                from sipguard.admin.host import start_host_admin

                self._admin = await start_host_admin(self, self.logger, len(self.workers))
            pids = [w.process.pid for w in self.workers if w.process is not None]
            self.logger.info("started", workers=len(self.workers), pids=pids)
            if self.notifier is not None:
                self.notifier.ready(f"serving with {len(self.workers)} workers")
        await self.done.wait()
        await self._stop_all()
        return self.exit_code

    async def _all_ready(self) -> None:
        await asyncio.gather(*(w.ready.wait() for w in self.workers))

    async def _spawn(self, worker: _Worker) -> None:
        worker.ready.clear()
        for path in (worker.metrics_path, worker.control_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        env = dict(os.environ)
        env[WORKER_ENV] = str(worker.index)
        env[METRICS_ENV] = worker.metrics_path
        if self.controlled:
            env[CONTROL_ENV] = worker.control_path
        env["NOTIFY_SOCKET"] = worker.notify_path
        env[SUPERVISOR_ENV] = str(os.getpid())
        # A session of its own: a terminal's Ctrl-C or a signal to our process group reaches
        # the supervisor only, which stops the workers in order (systemd: KillMode=mixed).
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sipguard", "run", "--config", self.path,
            stdin=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(self.key.hex().encode("ascii") + b"\n")
        with contextlib.suppress(OSError):
            await process.stdin.drain()
        process.stdin.close()
        worker.process = process
        worker.started_at = time.monotonic()
        self.logger.info("worker_started", worker=worker.index, pid=process.pid)

    # -- following the workers ----------------------------------------------------------------

    async def _follow(self, worker: _Worker) -> None:
        """Wait for the worker to exit; restart it unless stopping or giving up."""
        while True:
            assert worker.process is not None
            process = worker.process
            code = await process.wait()
            if self.stopping:
                return
            fields = {"signal": signal.Signals(-code).name} if code < 0 else {"code": code}
            self.logger.error("worker_exited", worker=worker.index, pid=process.pid, **fields)
            if not self.serving:  # the host never came up: a restart would not fix it
                self._give_up(code if code > 0 else EX_SOFTWARE, "a worker failed to start")
                return
            now = time.monotonic()
            if self.deaths.died(now):
                self._give_up(EX_SOFTWARE, f"more than {MAX_DEATHS} deaths in {DEATH_WINDOW}s")
                return
            worker.delay = restart_delay(worker.delay, now - worker.started_at)
            await asyncio.sleep(worker.delay)  # the back-off itself, not a synchronisation
            if self.stopping:
                return
            self.restarts += 1
            await self._spawn(worker)

    def _give_up(self, code: int, reason: str) -> None:
        self.logger.critical("workers_failing", reason=reason, exit_code=code)
        self.exit_code = code
        self.stopping = True
        self.done.set()

    def _listen_notify(self, worker: _Worker) -> None:
        """The worker's NOTIFY_SOCKET: READY=1 (started, or a reload done), RELOADING=1."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.notify_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(worker.notify_path)
        sock.setblocking(False)
        self._socks.append(sock)

        def readable() -> None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while True:
                    self._notified(worker, sock.recv(NOTIFY_MAX).decode("utf-8", "replace"))

        asyncio.get_running_loop().add_reader(sock.fileno(), readable)

    def _notified(self, worker: _Worker, text: str) -> None:
        assignments = text.split("\n")
        if "RELOADING=1" in assignments:
            worker.ready.clear()
        elif "READY=1" in assignments:
            worker.reload_failed = any("FAILED" in a for a in assignments if a[:7] == "STATUS=")
            worker.ready.set()

    # -- signals ----------------------------------------------------------------------------

    def on_stop(self) -> None:
        if self.stopping:  # asked twice: the workers stop waiting for their drain
            self.logger.warning("stop_hastened")
            self._signal_all(signal.SIGTERM)
            return
        self.stopping = True
        self.done.set()

    def on_reload(self) -> None:
        if self.stopping or not self.serving:
            self.logger.warning("signal_ignored", signal="SIGHUP", reason="not serving")
            return
        self._task(self._reload())

    async def _reload(self) -> list[str]:
        """The reload (SIGHUP, `POST /v1/reload`): its problems, empty when applied."""
        async with self._reload_lock:  # one reload at a time, in the order asked
            return await self._reload_once()

    async def _reload_once(self) -> list[str]:
        from sipguard.config import load_settings

        self.logger.info("config_reloading")
        if self.notifier is not None:
            self.notifier.reloading("reloading the configuration")
        try:
            settings = await asyncio.get_running_loop().run_in_executor(
                None, load_settings, self.path
            )
            problems = [] if settings.workers == self.settings.workers else [
                f"{self.path}: workers: a change of the number of workers needs a restart"
            ]  # fmt: skip
        except ConfigError as exc:
            problems = exc.problems
        if problems:
            self.logger.error("config_reload_failed", problems=problems[:20], count=len(problems))
            if self.notifier is not None:
                self.notifier.ready("serving; configuration reload FAILED, previous one kept")
            return problems
        problems = await self._reload_workers()
        failed = [w.index for w in self.workers if w.reload_failed or not w.ready.is_set()]
        if self.settings.metrics != settings.metrics:
            self._close_endpoint()
            await self._open_endpoint(settings)
        self.settings = settings
        self.logger.info("config_reloaded", file=self.path, failed_workers=failed)
        if problems:
            self.logger.error("worker_reload_failed", problems=problems[:20], count=len(problems))
        if self.notifier is not None:
            self.notifier.ready("serving; configuration reloaded")
        return problems

    async def _reload_workers(self) -> list[str]:
        """Every worker reloads the validated file: over its control socket when there are
        some (its problems come back), else by SIGHUP; then READY=1 from each is awaited."""
        for worker in self.workers:
            worker.ready.clear()
        problems: list[str] = []
        if self.controlled:
            from sipguard.admin.host import reload_over_controls

            problems = await reload_over_controls(self.controls(), RELOAD_TIMEOUT)
        else:
            self._signal_all(signal.SIGHUP)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RELOAD_TIMEOUT):
                await self._all_ready()
        return problems

    def _signal_all(self, signum: signal.Signals) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    # -- stop -------------------------------------------------------------------------------

    async def _stop_all(self) -> None:
        grace = self.settings.limits.shutdown_grace
        self.logger.info("stopping", grace=grace, workers=len(self.workers))
        if self.notifier is not None:
            self.notifier.stopping("stopping", needs=grace + STOP_MARGIN)
        self._close_endpoint()
        if self._admin is not None:
            await self._admin.close()
        self._signal_all(signal.SIGTERM)
        running = [w.process for w in self.workers if w.process is not None]
        try:
            async with asyncio.timeout(grace + STOP_MARGIN):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            self._signal_all(signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in running))
        for task in self._tasks:
            task.cancel()
        loop = asyncio.get_running_loop()
        for sock in self._socks:
            loop.remove_reader(sock.fileno())
            sock.close()
        self.logger.info("stopped", exit_code=self.exit_code)

    # -- /metrics ---------------------------------------------------------------------------

    async def _open_endpoint(self, settings: Settings) -> None:
        where = settings.metrics
        if where is None:
            return
        endpoint = AggregateEndpoint(self._metrics_paths, self._own_series)
        try:
            self._endpoint = await serve_http(endpoint.respond, where.host, where.port)
        except OSError as exc:  # not worth refusing SIP service for
            self.logger.error("listener_error", listener="metrics", detail=exc.strerror or str(exc))
            return
        self.logger.info("metrics_listening", host=where.host, port=where.port)

    def _close_endpoint(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    def _metrics_paths(self) -> list[str]:
        """Every running worker's socket (one still starting refuses: it is left out)."""
        return [w.metrics_path for w in self.workers if _pid(w) is not None]

    def _own_series(self) -> str:
        alive = sum(1 for w in self.workers if _pid(w) is not None)
        return (
            "# HELP sipguard_workers Worker processes running now.\n"
            "# TYPE sipguard_workers gauge\n"
            f"sipguard_workers {alive}\n"
            "# HELP sipguard_worker_restarts_total Workers started again after they died.\n"
            "# TYPE sipguard_worker_restarts_total counter\n"
            f"sipguard_worker_restarts_total {self.restarts}\n"
        )

    # -- the admin API ----------------------------------------------------------------------

    def controls(self) -> list[Any]:
        """Every worker slot for the admin API (`sipguard.admin.host.WorkerControl`)."""
        from sipguard.admin.host import WorkerControl

        return [WorkerControl(w.index, _pid(w), w.control_path) for w in self.workers]

    async def reload_workers(self) -> list[str]:
        if self.stopping:
            return ["the host is stopping: nothing reloaded"]
        return await self._reload()

    def note(self, level: str, event: str, **fields: Any) -> None:
        getattr(self.logger, level)(event, **fields)

    def _task(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _pid(worker: _Worker) -> int | None:
    """The pid of the worker's process while it runs."""
    process = worker.process
    return process.pid if process is not None and process.returncode is None else None


def supervise(path: str, settings: Settings, warnings: Sequence[str]) -> int:
    """`sipguard run` with `workers` > 1: supervise the workers until stopped; the exit code."""
    logger = configure_logging(settings.log.level, settings.log.format).bind(supervisor=True)
    for warning in warnings:
        logger.warning("config_warning", detail=warning)
    with tempfile.TemporaryDirectory(prefix="sipguard-workers-") as workdir:
        os.chmod(workdir, 0o700)
        return asyncio.run(Supervisor(path, settings, logger, workdir).run())
