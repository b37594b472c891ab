"""The admin API's test bed: `DaemonBackend` over the real guard, trunk limiter and upstream pool
(a small core of those three), a server double whose reload answers what a test sets, and an
observer that keeps what it is told; the `admin` fixture is a started listener on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from sipguard.admin.api import AdminListener, start_admin
from sipguard.admin.daemon import DaemonBackend, LocalService
from sipguard.policy.guard import BanEvent, BanRecord, Guard, GuardSettings, UnbanEvent
from sipguard.policy.limits import TrunkLimiter, TrunkUsage
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.upstream_report import UpstreamStatus
from sipguard.settings import (
    AdminSettings,
    AuthSettings,
    Credential,
    Listener,
    Settings,
    Trunk,
    TrunkLimits,
    Upstream,
)
from tests.unit.proxy.test_failover import Rig

TOKEN = b"t" * 32
NEVER_BANNED = "192.0.2.200"


class GuardCore:
    """The part of the core the admin API reaches: its guard and its trunk limiter."""

    def __init__(self) -> None:
        self.guard = Guard(GuardSettings(ban_failures=2, never_ban={NEVER_BANNED}))
        self.limiter = TrunkLimiter()
        # the core's upstream pool (two upstreams, probed each second, down after 2 failures)
        self.pool = Rig(probe_interval=1.0, probe_timeout=0.5, down_after=2, up_after=2)

    def bans(self, now: float) -> list[BanRecord]:
        return self.guard.bans(now)

    def ban(self, ip: str, now: float, duration: float | None) -> BanEvent | None:
        return self.guard.ban(ip, now, duration)

    def unban(self, ip: str) -> UnbanEvent | None:
        return self.guard.unban(ip)

    def trunk_usage(self, name: str) -> TrunkUsage | None:
        return self.limiter.usage(name)

    def upstreams(self) -> list[UpstreamStatus]:
        return self.pool.ups.status()


class Reloader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.problems: list[str] = []
        self.reloads = 0

    async def reload_from_file(self, path: str) -> list[str]:
        self.reloads += 1
        return list(self.problems)


class Recorder:
    """An observer that keeps what it is told (ban events, log lines)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lines: list[tuple[str, dict[str, Any]]] = []
        self.logger = self

    def banned(self, event: Any) -> None:
        self.events.append(event)

    def listener_error(self, listener: str, detail: str) -> None:
        self.lines.append(("listener_error", {"listener": listener, "detail": detail}))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def make_settings(admin: AdminSettings | None) -> Settings:
    expired = datetime(2020, 1, 1, tzinfo=UTC)
    return Settings(
        source="/etc/sipguard/sipguard.yaml",
        listen=(Listener("udp", "127.0.0.1", 5060),),
        tls=None,
        upstream=(Upstream("sip:127.0.0.1:5070", "udp", "127.0.0.1", 5070),),
        auth=AuthSettings(realm="sipguard.test"),
        trunks=(
            Trunk(
                "acme",
                whitelist=parse_rules(["203.0.113.0/24"]),
                credentials=(
                    Credential("acme", password="s3cret-password"),
                    Credential("old", ha1={"MD5": "0" * 32}, valid_until=expired),
                ),
                limits=TrunkLimits(calls_per_second=10, concurrent_calls=5),
            ),
            Trunk("open", whitelist=parse_rules(["198.51.100.7"])),
        ),
        admin=admin,
        source_sha256="ab" * 32,
    )


class Harness:
    def __init__(self, listener: AdminListener, core: GuardCore, server: Reloader) -> None:
        self.listener = listener
        self.core = core
        self.server = server
        self.url = f"http://127.0.0.1:{listener.address[1]}"
        self.observer: Recorder

    async def request(
        self, method: str, path: str, token: bytes | None = TOKEN, **kw: Any
    ) -> tuple[int, Any, Any]:
        headers = {} if token is None else {"Authorization": "Bearer " + token.decode()}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, headers=headers, **kw) as response,
        ):
            return response.status, await response.json(), response.headers


@pytest.fixture
async def admin() -> AsyncIterator[Harness]:
    settings = AdminSettings("127.0.0.1", 0, TOKEN, "file:/etc/sipguard/admin.token")
    core = GuardCore()
    core.limiter.configure({t.name: t.limits for t in make_settings(None).trunks})
    server = Reloader(make_settings(settings))
    observer = Recorder()
    backend = DaemonBackend(server, core, observer, "/etc/sipguard/sipguard.yaml")
    listener = await start_admin(settings, LocalService(backend))
    harness = Harness(listener, core, server)
    harness.observer = observer
    try:
        yield harness
    finally:
        await listener.close()
