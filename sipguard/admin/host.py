"""The admin API of a host of `workers: N`: served once by the supervisor, answered by asking
every worker.

Owns: `HostService` (the `AdminService` the supervisor serves on `admin.listen`, behind the
same token and bounds as a lone daemon's) and `ask` (one request to one worker's control
socket, see `sipguard.worker`). Each request goes to every running worker at once, over its
Unix control socket, and the answers are merged (`sipguard.admin.merge`) into the lone daemon's
JSON shapes:
- reads (bans, trunks, upstreams) merge every worker's answer;
- a ban or an unban is placed on every worker: the kernel spreads a source's datagrams over the
  workers by source port, so each must refuse (or serve again) the source at once. An unban
  answers 200 when any worker held the ban (with Redis the first worker's lift may reach the
  others before they are asked);
- a reload is the supervisor's (its SIGHUP path: the file validated once, then every worker);
- status is the supervisor's: its pid and uptime, the number of workers and their pids.

A worker that does not answer (starting again after it died, stuck) turns the request into a
503 naming it, after the others were asked: a change is then in force on those only, and the
answer says so; a read is never answered with a part of the host's state.

Never does: check the token (the API in front of it does), log the token, or hold state between
two requests.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote

import aiohttp
import orjson

from sipguard import __version__
from sipguard.admin.api import AdminListener, start_admin
from sipguard.admin.merge import merge_ban, merge_bans, merge_trunks, merge_upstreams
from sipguard.admin.views import JSON, ServiceError, timestamp
from sipguard.settings import Settings

ASK_TIMEOUT: Final = 10.0  # seconds for one worker's answer (a reload has its own bound)
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024  # a worker's GET /v1/bans with 100 k bans: ~10 MB


@dataclass(frozen=True, slots=True)
class WorkerControl:
    """A worker slot as the admin API sees it: `pid` None while no process runs in it."""

    index: int
    pid: int | None
    path: str


class Host(Protocol):
    """What the supervisor offers (implemented by `sipguard.supervisor.Supervisor`)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def started(self) -> float: ...

    def controls(self) -> list[WorkerControl]: ...

    async def reload_workers(self) -> list[str]: ...

    def note(self, level: str, event: str, **fields: Any) -> None: ...


async def ask(
    path: str, method: str, route: str, body: Any = None, timeout: float = ASK_TIMEOUT
) -> tuple[int, Any] | None:
    """One request to the worker serving on `path`: (status, JSON), or None when it does not
    answer within `timeout` (gone, starting, stuck) or answers something that is not JSON."""
    try:
        async with (
            asyncio.timeout(timeout),
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session,
            session.request(method, "http://worker" + route, json=body) as response,
        ):
            raw = await response.content.read(MAX_ANSWER_BYTES)
            return response.status, orjson.loads(raw) if raw else None
    except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def reload_over_controls(controls: Sequence[WorkerControl], timeout: float) -> list[str]:
    """Reload every worker through its control socket, at once; each worker's problems,
    prefixed with its index (empty: every worker applied the file)."""
    running = [c for c in controls if c.pid is not None]
    answers = await asyncio.gather(
        *(ask(c.path, "POST", "/v1/reload", timeout=timeout) for c in running)
    )
    problems = [f"worker {c.index}: not running" for c in controls if c.pid is None]
    for control, got in zip(running, answers, strict=True):
        if got is None:
            problems.append(f"worker {control.index}: no answer to the reload within {timeout}s")
        elif got[0] != 200:
            errors = got[1].get("errors") if isinstance(got[1], dict) else None
            problems += [f"worker {control.index}: {e}" for e in errors or [f"HTTP {got[0]}"]]
    return problems


class HostService:
    """`AdminService` of the host: every worker asked, the answers merged."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @property
    def settings(self) -> Settings:
        return self.host.settings

    def note(self, level: str, event: str, **fields: Any) -> None:
        self.host.note(level, event, **fields)

    async def _ask_all(
        self, method: str, route: str, expected: Sequence[int], body: Any = None
    ) -> list[tuple[int, int, Any]]:
        """(worker index, status, JSON) of every worker, asked at once; ServiceError (503)
        naming the workers that did not answer, (502) for an answer not in `expected`."""
        controls = self.host.controls()
        answers = await asyncio.gather(
            *(ask(c.path, method, route, body) for c in controls if c.pid is not None)
        )
        running = [c.index for c in controls if c.pid is not None]
        silent = [c.index for c in controls if c.pid is None]
        silent += [index for index, got in zip(running, answers, strict=True) if got is None]
        if silent:
            what = "" if method == "GET" else "; the change is in force on the others only"
            names = ", ".join(str(index) for index in sorted(silent))
            raise ServiceError(
                503, f"worker {names} did not answer (starting again?){what}", workers=silent
            )
        found = [(index, *got) for index, got in zip(running, answers, strict=True) if got]
        for index, status, answer in found:
            if status not in expected:
                detail = answer.get("error") if isinstance(answer, dict) else None
                raise ServiceError(502, f"worker {index} answered {status}: {detail}")
        return found

    async def bans(self) -> list[JSON]:
        found = await self._ask_all("GET", "/v1/bans", (200,))
        return merge_bans([answer["bans"] for _, _, answer in found])

    async def ban(self, address: str, duration: float | None) -> JSON | None:
        body = {"address": address, "duration": duration}
        found = await self._ask_all("POST", "/v1/bans", (200, 409), body)
        views = [answer["ban"] for _, status, answer in found if status == 200]
        return merge_ban(views) if views else None

    async def unban(self, address: str) -> bool:
        route = "/v1/bans/" + quote(address, safe="")
        found = await self._ask_all("DELETE", route, (200, 404))
        return any(status == 200 for _, status, _ in found)

    async def trunks(self) -> list[JSON]:
        found = await self._ask_all("GET", "/v1/trunks", (200,))
        return merge_trunks([answer["trunks"] for _, _, answer in found])

    async def upstreams(self) -> list[JSON]:
        found = await self._ask_all("GET", "/v1/upstreams", (200,))
        return merge_upstreams([(index, answer["upstreams"]) for index, _, answer in found])

    async def reload(self) -> list[str]:
        return await self.host.reload_workers()

    async def status(self) -> JSON:
        controls = self.host.controls()
        settings = self.settings
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started": timestamp(self.host.started),
            "uptime_seconds": round(time.time() - self.host.started, 3),
            "workers": len(controls),
            "worker_pids": [c.pid for c in controls],
            "config": {"file": settings.source, "sha256": settings.source_sha256},
        }


async def start_host_admin(host: Host, logger: Any, workers: int) -> AdminListener | None:
    """The host's admin listener on `admin.listen` (the supervisor's, once every worker is
    ready). One that cannot be bound is a `listener_error`: SIP service goes on, as for
    /metrics."""
    where = host.settings.admin
    if where is None:
        return None
    url = f"http://{f'[{where.host}]' if ':' in where.host else where.host}:{where.port}/v1"
    try:
        listener = await start_admin(where, HostService(host))
    except OSError as exc:
        logger.error("listener_error", listener=url, detail=exc.strerror or str(exc))
        return None
    logger.info("admin_listening", url=url, workers=workers)
    return listener
