"""The in-process `SharedState` (`state.backend: memory`, the default): this process only.

Owns: bounded dictionaries with expiry for nonce-counts, failure windows and counters, and the
local delivery of published bans (a ban published here is heard here, as with Redis, so the
shell has one code path).

Never does: anything another process could see; I/O. Time comes from `clock` (a wall clock by
default, as ban ends are epoch seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from sipguard.settings import StateSettings
from sipguard.state.interface import Answer, BanCallback, ErrorCallback

# Entries kept per table: beyond it the oldest go first (the core's own tables fail closed; this
# backend is only the single-process default and the tests' reference).
MAX_ENTRIES = 100_000


class _Expiring:
    """key -> (value, expiry), oldest first, at most MAX_ENTRIES."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def get(self, key: str, now: float) -> int | None:
        item = self._items.get(key)
        if item is None or item[1] <= now:
            return None
        return item[0]

    def bump(self, key: str, now: float, window: float) -> int:
        """Add one to `key`; a missing or expired key starts a new window of `window` s."""
        item = self._items.get(key)
        if item is None or item[1] <= now:
            self.put(key, 1, now + window)
            return 1
        self._items[key] = (item[0] + 1, item[1])
        return item[0] + 1

    def put(self, key: str, value: int, expires: float) -> None:
        self._items.pop(key, None)
        while len(self._items) >= MAX_ENTRIES:
            self._items.popitem(last=False)
        self._items[key] = (value, expires)


class MemoryState:
    """`SharedState` for one process."""

    def __init__(self, settings: StateSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._nonces = _Expiring()
        self._failures = _Expiring()
        self._counters = _Expiring()
        self._on_ban: BanCallback | None = None

    @property
    def shared(self) -> bool:
        return False

    @property
    def errors(self) -> int:
        return 0

    async def start(self, on_ban: BanCallback, on_error: ErrorCallback) -> None:
        self._on_ban = on_ban

    async def close(self) -> None:
        self._on_ban = None

    async def count_nonce(self, nonce: str, nc: int, ttl: float) -> bool | None:
        return self._count(nonce, nc, ttl)

    def _count(self, nonce: str, nc: int, ttl: float) -> bool:
        now = self._clock()
        last = self._nonces.get(nonce, now)
        if nc <= 0 or (last is not None and (last < 0 or nc <= last)):
            return False
        self._nonces.put(nonce, nc, now + ttl)
        return True

    def count_nonce_then(self, nonce: str, nc: int, ttl: float, then: Answer) -> None:
        asyncio.get_running_loop().call_soon(then, self._count(nonce, nc, ttl))

    async def kill_nonce(self, nonce: str, ttl: float) -> None:
        self._nonces.put(nonce, -1, self._clock() + ttl)

    async def add_failure(self, ip: str, window: float) -> int | None:
        return self._failures.bump(ip, self._clock(), window)

    async def publish_ban(self, ip: str, until: float) -> bool:
        if self._on_ban is not None:
            self._on_ban(ip, until)
        return True

    async def publish_unban(self, ip: str) -> bool:
        self._failures.put(ip, 0, 0.0)  # expired at once
        if self._on_ban is not None:
            self._on_ban(ip, 0.0)
        return True

    async def share_calls(
        self, instance: str, counts: dict[str, int], ttl: float
    ) -> dict[str, int] | None:
        return {}  # this process is the only instance

    async def add(self, key: str, amount: int, ttl: float) -> int | None:
        now = self._clock()
        value = (self._counters.get(key, now) or 0) + amount
        self._counters.put(key, value, now + ttl)
        return value
