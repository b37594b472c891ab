"""The admin API's HTTP side: routes, the bearer token, and the bounds of its listener.

Owns: `start_admin` (an aiohttp application on `admin.listen`, in the daemon's event loop) and
every HTTP decision: routes and methods, `Authorization: Bearer` checked in constant time, JSON
for every answer including errors, and the bounds below.

Never does: SIP, or anything before the token is checked: a request without the right token gets
`401`, changes nothing and is logged (`admin_unauthorized`, with the peer). The token is read
from the running settings at each request, so a reload that rotates `admin.token_file` applies
at once. Moving the listener (`admin.listen`) takes a restart.

Why aiohttp (measured with scripts/bench_admin_http, issue 17): the API has seven routes with
path parameters, JSON bodies and size limits, past what the hand-written `/metrics` responder
should grow into. Server CPU per request with a new connection each, medians of three runs of
5 on a shared host: aiohttp 0.47-0.72 ms, starlette on uvicorn with httptools 0.46-0.60 ms (0 to
25% cheaper), with h11 0.79-0.97 ms, a hand-written responder 0.26-0.29 ms. At the listener's
bound of 20 requests/s either costs under 1.5% of a core, so the difference does not decide;
embedding does: aiohttp runs in the daemon's loop without touching signal handlers, while
uvicorn's `Server.serve` installs its own SIGINT/SIGTERM handlers (they would take over the
daemon's graceful shutdown), and it is one dependency instead of three (uvicorn, starlette,
httptools, plus anyio).

Bounds (the API can lift bans, so it is a target): a request body of at most
`MAX_BODY_BYTES`, header lines of at most `MAX_HEADER_BYTES`, at most `MAX_CONNECTIONS` open
connections, each closed after `CONNECTION_DEADLINE` seconds whatever it does (slow-loris), and
`RATE` requests per second over the whole listener (burst `BURST`), answered `429` beyond.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from sipguard.admin.views import (
    AdminService,
    RequestError,
    ServiceError,
    parse_address,
    parse_ban,
)
from sipguard.settings import AdminSettings

MAX_BODY_BYTES: Final = 4096  # `{"address": ..., "duration": ...}` is < 100 bytes
MAX_HEADER_BYTES: Final = 4096  # a bearer token of 64 hex digits fits many times over
MAX_HEADERS: Final = 32
MAX_CONNECTIONS: Final = 16  # an operator's CLI opens one at a time
CONNECTION_DEADLINE: Final = 30.0  # seconds; a reload answers within a few
RATE: Final = 20.0  # requests per second over the listener: scripts, not load
BURST: Final = 40.0
REALM: Final = 'Bearer realm="sipguard-admin"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return answer(status, {"error": message, **extra}, headers)


def _fingerprint(token: bytes) -> bytes:
    """SHA-256 of a token: comparing fingerprints keeps the time independent of the length."""
    return hashlib.sha256(token).digest()


class _Gate:
    """The listener's request rate (token bucket) and open connections."""

    def __init__(self) -> None:
        self.tokens = BURST
        self.stamp = time.monotonic()
        self.connections = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.stamp) * RATE)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _Bounded(asyncio.Protocol):
    """Wraps aiohttp's protocol: refuses connections beyond MAX_CONNECTIONS and aborts each one
    after CONNECTION_DEADLINE (aiohttp has no deadline for reading a request head)."""

    def __init__(self, inner: asyncio.Protocol, gate: _Gate) -> None:
        self._inner = inner
        self._gate = gate
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._gate.connections >= MAX_CONNECTIONS:
            transport.abort()  # type: ignore[attr-defined]
            return
        self._gate.connections += 1
        self._counted = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(CONNECTION_DEADLINE, transport.abort)  # type: ignore[attr-defined]
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._counted = False
        self._gate.connections -= 1
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)


def _peer(request: web.Request) -> dict[str, Any]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return {"src_ip": str(peer[0]), "src_port": int(peer[1])}
    return {"src_ip": "", "src_port": 0}


class AdminApi:
    """The routes over `service` (JSON in, JSON out). One instance per listener. `authorize`:
    False only for a worker's control socket (`start_control`), which its supervisor alone can
    reach (a Unix socket in a directory of mode 0700); the supervisor checked the token."""

    def __init__(self, service: AdminService, *, authorize: bool = True) -> None:
        self.service = service
        self.gate = _Gate()
        self.authorize = authorize

    def application(self) -> web.Application:
        middlewares = [self._bounds, self._authorize] if self.authorize else [self._bounds]
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
        app.router.add_get("/v1/bans", self.list_bans)
        app.router.add_post("/v1/bans", self.add_ban)
        app.router.add_delete("/v1/bans/{address}", self.lift_ban)
        app.router.add_get("/v1/trunks", self.trunks)
        app.router.add_get("/v1/upstreams", self.upstreams)
        app.router.add_post("/v1/reload", self.reload)
        app.router.add_get("/v1/status", self.status)
        return app

    # -- middlewares ----------------------------------------------------------------------------

    @web.middleware
    async def _bounds(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Rate first (before any work), then every HTTP error as JSON."""
        if not self.gate.allow():
            return error(429, "too many requests", headers={"Retry-After": "1"})
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error(exc.status, exc.reason.lower())
        except ServiceError as exc:
            return error(exc.status, str(exc), **exc.extra)

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        settings = self.service.settings.admin
        if settings is None:
            return error(503, "the admin API is off in the running configuration")
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        expected = _fingerprint(settings.token)
        presented = _fingerprint(token.strip().encode("utf-8", "replace"))
        if not (hmac.compare_digest(presented, expected) and scheme.lower() == "bearer"):
            self.service.note(
                "warning",
                "admin_unauthorized",
                method=request.method,
                path=request.path[:100],
                reason="no token" if not given else "wrong token",
                **_peer(request),
            )
            return error(401, "unauthorized", headers={"WWW-Authenticate": REALM})
        return await handler(request)

    # -- routes ---------------------------------------------------------------------------------

    async def list_bans(self, request: web.Request) -> web.Response:
        return answer(200, {"bans": await self.service.bans()})

    async def add_ban(self, request: web.Request) -> web.Response:
        try:
            address, duration = parse_ban(await _json_body(request))
        except RequestError as exc:
            return error(400, str(exc))
        view = await self.service.ban(address, duration)
        if view is None:
            return error(
                409,
                "not banned: the address is exempt (protection.never_ban) or bans are off "
                "(protection.ban_duration: 0)",
                address=address,
            )
        self._note("admin_banned", request, address=address)
        return answer(200, {"ban": view})

    async def lift_ban(self, request: web.Request) -> web.Response:
        try:
            address = parse_address(request.match_info["address"])
        except RequestError as exc:
            return error(400, str(exc))
        if not await self.service.unban(address):
            return error(404, "not banned", address=address)
        self._note("admin_unbanned", request, address=address)
        return answer(200, {"unbanned": address})

    async def trunks(self, request: web.Request) -> web.Response:
        return answer(200, {"trunks": await self.service.trunks()})

    async def upstreams(self, request: web.Request) -> web.Response:
        return answer(200, {"upstreams": await self.service.upstreams()})

    async def reload(self, request: web.Request) -> web.Response:
        self._note("admin_reload", request)
        problems = await self.service.reload()
        running = (await self.service.status())["config"]
        if problems:
            return answer(422, {"outcome": "refused", "errors": problems, "running": running})
        return answer(200, {"outcome": "applied", "errors": [], "running": running})

    async def status(self, request: web.Request) -> web.Response:
        return answer(200, await self.service.status())

    def _note(self, event: str, request: web.Request, **fields: Any) -> None:
        """An operator's action, logged where the token was checked (a worker's control socket
        has no peer worth naming: its supervisor logged the request)."""
        if self.authorize:
            self.service.note("info", event, **fields, **_peer(request))


async def _json_body(request: web.Request) -> object:
    """The request body as JSON; RequestError when it is not (aiohttp bounds its size)."""
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise RequestError("body: not valid JSON") from None


class AdminListener:
    """A started admin API: `address` (host, port actually bound; a Unix socket: its path and
    0), `close()`."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self._runner = runner
        self._server = server
        sockname = server.sockets[0].getsockname()
        if isinstance(sockname, str):
            self.address: tuple[str, int] = (sockname, 0)
        else:
            self.address = (str(sockname[0]), int(sockname[1]))

    async def close(self) -> None:
        self._server.close()
        await self._runner.cleanup()


async def _runner(api: AdminApi) -> web.AppRunner:
    runner = web.AppRunner(
        api.application(),
        access_log=None,
        handle_signals=False,
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    return runner


async def start_admin(settings: AdminSettings, service: AdminService) -> AdminListener:
    """Listen on `settings.host:port` (raises OSError when it cannot). `service`: one daemon's
    (`sipguard.admin.daemon.LocalService`) or the supervisor's (`HostService`)."""
    api = AdminApi(service)
    runner = await _runner(api)
    inner = runner.server
    assert inner is not None
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            lambda: _Bounded(inner(), api.gate), settings.host, settings.port, backlog=16
        )
    except OSError:
        await runner.cleanup()
        raise
    return AdminListener(runner, server)


async def start_control(path: str, service: AdminService) -> AdminListener:
    """A worker's control socket (`workers: N`): the same routes on the Unix socket `path`,
    without the token (the supervisor checked it; the socket's directory is its own, 0700)."""
    api = AdminApi(service, authorize=False)
    runner = await _runner(api)
    inner = runner.server
    assert inner is not None
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_unix_server(
            lambda: _Bounded(inner(), api.gate), path, backlog=16
        )
    except OSError:
        await runner.cleanup()
        raise
    return AdminListener(runner, server)
