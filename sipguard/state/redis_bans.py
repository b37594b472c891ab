"""The ban channel of the Redis state: every instance hears every ban and unban.

Owns: `BanListener`, the subscriber of `PREFIX bans` (messages "IP END", "IP 0" for an unban):
it reconnects with back-off on its own and, on each (re)connection, reads the stored bans
(`PREFIX ban:IP`, at most `MAX_BANS_LOADED`) so a ban placed during its absence still reaches
it; the names of that channel and those keys (`BANS_CHANNEL`, `BAN_KEY`).

Never does: publish or store a ban (`sipguard.state.redis_store` does both in one pipeline),
decide about an outage (it tells its owner of each failure and each reconnection: the breaker
is `redis_store`'s), log, or raise for an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any, Final

from redis.exceptions import RedisError

from sipguard.state.interface import BanCallback

__all__ = [
    "BANS_CHANNEL",
    "BAN_KEY",
    "MAX_BANS_LOADED",
    "SUBSCRIBE_BACKOFF",
    "SUBSCRIBE_POLL",
    "BanListener",
]

BANS_CHANNEL: Final = "bans"  # below the key prefix: the pub/sub channel of bans and unbans
BAN_KEY: Final = "ban:"  # below the key prefix, then the IP: a stored ban (end; TTL its length)
# Subscriber back-off after a lost connection: doubles from the first to the last.
SUBSCRIBE_BACKOFF: Final = (0.2, 2.0)
# Longest wait for a ban message before the subscriber pings the server (a dead server shows up).
SUBSCRIBE_POLL: Final = 1.0
# Stored bans read on each (re)subscription, at most (SCAN pages of 500).
MAX_BANS_LOADED: Final = 100_000


class BanListener:
    """The subscriber of one Redis state's ban channel, as one task. `failed(operation, exc)`
    is told each failure, `connected()` each (re)subscription once the stored bans are read."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        on_ban: BanCallback,
        *,
        failed: Callable[[str, BaseException], None],
        connected: Callable[[], None],
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._channel = f"{prefix}{BANS_CHANNEL}"
        self._on_ban = on_ban
        self._failed = failed
        self._connected = connected
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._subscribe_forever())

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        # A cancel that lands while redis-py sets up a read can be swallowed: cancel again until
        # it ends; the loop also checks `_closing` at least every SUBSCRIBE_POLL seconds.
        for _ in range(int(4 * SUBSCRIBE_POLL / 0.05)):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)

    async def _subscribe_forever(self) -> None:
        delay = SUBSCRIBE_BACKOFF[0]
        while not self._closing:
            try:
                await self._subscribe_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed("subscribe", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, SUBSCRIBE_BACKOFF[1])

    async def _subscribe_once(self) -> None:
        # A Cluster client learns the slots on its first command: before its pub/sub does.
        await self._client.initialize()
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            await self._load_bans()
            self._connected()
            while not self._closing:
                message = await pubsub.get_message(timeout=SUBSCRIBE_POLL)
                if message is None:
                    await pubsub.ping()  # a dead server shows up within one timeout
                    continue
                self._heard(message.get("data"))
        finally:
            with contextlib.suppress(RedisError, OSError, asyncio.CancelledError):
                await pubsub.aclose()

    async def _load_bans(self) -> None:
        seen = 0
        pattern = f"{self._prefix}{BAN_KEY}*"
        async for key in self._client.scan_iter(match=pattern, count=500):
            value = await self._client.get(key)
            name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            ip = name[len(self._prefix) + len(BAN_KEY) :]
            if isinstance(value, bytes):
                self._heard(f"{ip} {value.decode('ascii', 'replace')}".encode())
            seen += 1
            if seen >= MAX_BANS_LOADED:
                return

    def _heard(self, data: object) -> None:
        if not isinstance(data, bytes):
            return
        ip, _, until = data.decode("utf-8", "replace").partition(" ")
        try:
            end = float(until)
        except ValueError:
            return
        if ip and math.isfinite(end):
            self._on_ban(ip, end)
