"""What SIGTERM, SIGINT and SIGHUP mean in each phase of a running daemon.

Owns: `Signals` (installed before anything can send READY=1, removed only once stopped) and its
phases (starting, serving, stopping):
- SIGTERM/SIGINT: stop; a second one during the drain ends the wait at once (connections are
  aborted, still exit 0): the operator who asks twice does not want to wait. One that arrives
  while starting is acted on once the listeners are up (stop at once);
- SIGHUP: reload the file (`Server.reload_from_file`); while starting, once started; while
  stopping, ignored (logged `signal_ignored`).

Never does: stop or reload by itself (the server does), exit (`sipguard.server.run` returns
the exit code).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
from typing import Any

from sipguard.server.lifecycle import Server
from sipguard.server.notes import describe_error, note


class _Phase(enum.Enum):
    STARTING = "starting"  # before the listeners are up (and before READY=1)
    SERVING = "serving"
    STOPPING = "stopping"  # from the first SIGTERM/SIGINT until stop() has returned


class Signals:
    """What SIGTERM, SIGINT and SIGHUP mean in each phase of `run._serve` (module docstring).

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
            note(self.observer, "warning", "stop_hastened", signal=signum.name)
            if self.server is not None:
                self.server.hurry()
            return
        self.stop.set()  # while starting: acted on as soon as the listeners are up

    def on_reload(self) -> None:
        if self.phase is _Phase.STOPPING:
            note(self.observer, "warning", "signal_ignored", signal="SIGHUP", reason="stopping")
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
            note(self.observer, "error", "bug", error=describe_error(error))

    async def stopping(self) -> None:
        """Leave SERVING: no reload from now on; one already running is cancelled (its new
        listeners are closed again) before the server stops."""
        self.phase = _Phase.STOPPING
        reloads = list(self.reloads)
        for task in reloads:
            task.cancel()
        await asyncio.gather(*reloads, return_exceptions=True)
