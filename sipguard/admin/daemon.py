"""The admin API's backend in the running daemon: the core's bans and counters, the server's
reload, the observer's log.

Owns: `DaemonBackend`, which implements `sipguard.admin.views.AdminBackend` over three objects
it reaches only through the small protocols below (so that it never imports the server, which
starts it): the core (`AdminCore`), the server (`Reloadable`) and the observer.

With shared state (`state.backend: redis`) a ban or unban placed here is also published
(`BanSharer`, the server's state bridge): every other instance applies it, and an unban deletes
the stored ban, so a source lifted on one instance is served by all of them at once.

Never does: decide about SIP or bans itself: a ban or unban is the core's guard's, told to the
observer like any other ban so that the `banned`/`unbanned` log lines and the gauge stay true.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sipguard import __version__
from sipguard.admin.api import AdminListener, start_admin, start_control
from sipguard.admin.views import JSON, ban_view, timestamp, trunk_view, upstream_view
from sipguard.policy.guard import BanEvent, BanRecord, UnbanEvent
from sipguard.policy.limits import TrunkUsage
from sipguard.proxy.upstream_report import UpstreamStatus
from sipguard.settings import Settings


class AdminCore(Protocol):
    """What the core offers the admin API (implemented by `sipguard.proxy.core.Core`)."""

    def bans(self, now: float) -> list[BanRecord]: ...

    def ban(self, ip: str, now: float, duration: float | None) -> BanEvent | None: ...

    def unban(self, ip: str) -> UnbanEvent | None: ...

    def trunk_usage(self, name: str) -> TrunkUsage | None: ...

    def upstreams(self) -> list[UpstreamStatus]: ...


class Reloadable(Protocol):
    """What the server offers: its settings and the SIGHUP reload."""

    @property
    def settings(self) -> Settings: ...

    async def reload_from_file(self, path: str) -> list[str]: ...


class BanSharer(Protocol):
    """Tells the other instances (implemented by `sipguard.state.bridge.StateBridge`)."""

    def publish_ban(self, ip: str, until: float) -> None: ...

    def publish_unban(self, ip: str) -> None: ...


class BanObserver(Protocol):
    def banned(self, event: Any) -> None: ...

    def listener_error(self, listener: str, detail: str) -> None: ...


class DaemonBackend:
    """`AdminBackend` for `sipguard run`. `clock` must be the clock of the core's `now`."""

    def __init__(
        self,
        server: Reloadable,
        core: AdminCore,
        observer: BanObserver,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        workers: int = 1,
        share: BanSharer | None = None,
    ) -> None:
        self._server = server
        self._core = core
        self._observer = observer
        self._path = path
        self._clock = clock
        self._started = clock()
        self._workers = workers
        self._share = share

    @property
    def settings(self) -> Settings:
        return self._server.settings

    def bans(self) -> list[BanRecord]:
        return self._core.bans(self._clock())

    def ban(self, address: str, duration: float | None) -> BanRecord | None:
        now = self._clock()
        event = self._core.ban(address, now, duration)
        if event is None:
            return None
        self._observer.banned(event)
        if self._share is not None:
            self._share.publish_ban(event.ip, event.until)
        return BanRecord(event.ip, now, event.until, event.failures)

    def unban(self, address: str) -> bool:
        event = self._core.unban(address)
        if event is None:
            return False
        self._observer.banned(event)  # logged `unbanned` with reason=lifted
        if self._share is not None:
            self._share.publish_unban(event.ip)
        return True

    def trunk_usage(self, name: str) -> TrunkUsage | None:
        return self._core.trunk_usage(name)

    def upstreams(self) -> list[JSON]:
        return [upstream_view(status) for status in self._core.upstreams()]

    async def reload(self) -> list[str]:
        return await self._server.reload_from_file(self._path)

    def status(self) -> JSON:
        now = self._clock()
        settings = self.settings
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started": timestamp(self._started),
            "uptime_seconds": round(now - self._started, 3),
            "workers": self._workers,
            "config": {"file": settings.source, "sha256": settings.source_sha256},
        }

    def note(self, level: str, event: str, **fields: Any) -> None:
        """One log line through the observer's logger (the daemon's JSON log)."""
        logger = getattr(self._observer, "logger", None)
        method = getattr(logger, level, None) if logger is not None else None
        if callable(method):
            method(event, **fields)


class LocalService:
    """`AdminService` of one daemon: its `DaemonBackend`'s answers as the API's JSON."""

    def __init__(self, backend: DaemonBackend) -> None:
        self.backend = backend

    @property
    def settings(self) -> Settings:
        return self.backend.settings

    async def bans(self) -> list[JSON]:
        return [ban_view(record) for record in self.backend.bans()]

    async def ban(self, address: str, duration: float | None) -> JSON | None:
        record = self.backend.ban(address, duration)
        return None if record is None else ban_view(record)

    async def unban(self, address: str) -> bool:
        return self.backend.unban(address)

    async def trunks(self) -> list[JSON]:
        now = datetime.now(UTC)
        return [
            trunk_view(trunk, self.backend.trunk_usage(trunk.name), now)
            for trunk in self.settings.trunks
        ]

    async def upstreams(self) -> list[JSON]:
        return self.backend.upstreams()

    async def reload(self) -> list[str]:
        return await self.backend.reload()

    async def status(self) -> JSON:
        return self.backend.status()

    def note(self, level: str, event: str, **fields: Any) -> None:
        self.backend.note(level, event, **fields)


async def start_worker_control(
    server: Reloadable,
    core: AdminCore,
    observer: BanObserver,
    path: str,
    control_path: str,
    share: BanSharer | None = None,
) -> AdminListener | None:
    """A worker's control socket under `workers: N` (its supervisor serves the admin listener
    and asks every worker through this socket). One that cannot be bound is a
    `listener_error`; SIP service goes on."""
    backend = DaemonBackend(server, core, observer, path, share=share)
    try:
        return await start_control(control_path, LocalService(backend))
    except OSError as exc:
        observer.listener_error(f"unix:{control_path}", exc.strerror or str(exc))
        return None


async def start_daemon_admin(
    server: Reloadable,
    core: AdminCore,
    observer: BanObserver,
    path: str,
    share: BanSharer | None = None,
) -> AdminListener | None:
    """The admin API of `sipguard run`, when the config has an `admin` section. A listener that
    cannot be bound is a `listener_error` and SIP service goes on, as for /metrics. `share`:
    the state bridge when state is shared (bans and unbans placed here reach every instance)."""
    settings = server.settings.admin
    if settings is None:
        return None
    backend = DaemonBackend(server, core, observer, path, share=share)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}"
    try:
        listener = await start_admin(settings, LocalService(backend))
    except OSError as exc:
        observer.listener_error(f"{url}/v1", exc.strerror or str(exc))
        return None
    backend.note("info", "admin_listening", url=f"{url}/v1")
    return listener
