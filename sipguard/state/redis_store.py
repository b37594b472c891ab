"""The Redis `SharedState` (`state.backend: redis`): every worker and every host shares it.

Owns: the key layout below `state.key_prefix`, the atomic scripts, the bounded connection pool
with timeouts, and the outage handling (circuit breaker). The ban channel's subscriber is
`sipguard.state.redis_bans`; it reports its failures and reconnections to the breaker here.

Keys (PREFIX = `state.key_prefix`):
  PREFIX nc:NONCE      highest accepted nonce-count; -1 once killed; TTL = the nonce's lifetime
  PREFIX fail:IP       failed authentications in the window started by the first one; TTL window
  PREFIX ban:IP        end of the ban (epoch seconds); TTL = the ban's length
  PREFIX bans          pub/sub channel: "IP END" for every ban, "IP 0" for every unban
  PREFIX{calls}:TRUNK hash: instance id -> "CALLS EXPIRY_MS" (its calls in progress on TRUNK,
                       until EXPIRY_MS of the server's clock); stale fields are removed on read.
                       One script writes every trunk's: the hash tag `{calls}` keeps them in one
                       slot of a Redis Cluster (a prefix with a hash tag of its own wins, which
                       puts every key in that one slot: fine too)
  PREFIX c:KEY         counters of other features (`add`)

Calls: one round trip each (EVALSHA of a short Lua script, or one command); nothing here is called
for responses, in-dialog requests or banned sources. The hot one, the nonce-count of every
answered challenge, goes over the `wire` (one connection of the pool taken over once redis-py set
it up; every count of one loop turn in one write), except in a Cluster, whose client routes it.
Every other script and transaction touches one key. URLs (`sipguard.state.redis_url`): redis://,
rediss:// (TLS), unix:///path, and redis+sentinel:// and redis+cluster:// through redis-py's own
Sentinel and Cluster clients (pub/sub in a Cluster: PUBLISH reaches every node, the subscriber
listens on one).

Outages: every call is bounded by OPERATION_TIMEOUT; a failure opens the breaker for
RETRY_AFTER seconds, during which calls answer None at once (no queue of timeouts on the hot
path), then the next call tries again. The subscriber reconnects with back-off on its own
(`redis_bans`); its reconnection ends an outage too.

Never does: log or count in metrics itself (callbacks), SIP decisions, raise for an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from functools import partial
from typing import Any, Final

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from sipguard.redis_target import CLUSTER_SCHEMES
from sipguard.settings import StateSettings
from sipguard.state.interface import Answer, BanCallback, ErrorCallback
from sipguard.state.redis_bans import BAN_KEY, BANS_CHANNEL, BanListener
from sipguard.state.redis_url import connect
from sipguard.state.wire import LOST, Link, ReplyError, pack

# A round trip on a LAN is ~0.1-0.5 ms; 250 ms means the server is stuck, not slow.
OPERATION_TIMEOUT: Final = 0.25
# After a failure, answer None without trying for this long (then try again).
RETRY_AFTER: Final = 1.0
# Connections per process: the hot path needs one at a time per request in flight; beyond this
# a call waits (bounded by OPERATION_TIMEOUT) instead of opening more.
POOL_SIZE: Final = 32

# KEYS[1] nc key; ARGV nc, ttl ms. 1 = accepted, 0 = replayed, decreasing or killed.
_COUNT_NONCE: Final = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local nc = tonumber(ARGV[1])
if last < 0 or nc <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_COUNT_NONCE_SHA: Final = hashlib.sha1(_COUNT_NONCE.encode()).hexdigest()  # noqa: S324 (Redis's id)
# KEYS[1] counter; ARGV amount, ttl ms (set on creation only: a fixed window). The new count.
_WINDOW_ADD: Final = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
"""

# KEYS[1] counter; ARGV amount, ttl ms (from every change). The new value. A script rather than
# MULTI/EXEC: redis-py's Cluster transactions fail on a client not yet initialised.
_ADD: Final = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
"""

# KEYS one hash per trunk; ARGV instance id, ttl ms, then one count per key. Stores this
# instance's count with an expiry on the server's clock (no skew between hosts), drops the
# expired fields of dead instances, answers the sum of the others' per key.
_SHARE_CALLS: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, ttl = ARGV[1], tonumber(ARGV[2])
local sums = {}
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, me, ARGV[i + 2] .. ' ' .. (now + ttl))
  redis.call('PEXPIRE', key, ttl)
  local sum, all = 0, redis.call('HGETALL', key)
  for j = 1, #all, 2 do
    if all[j] ~= me then
      local n, expiry = string.match(all[j + 1], '^(%d+) (%d+)$')
      if n and tonumber(expiry) > now then sum = sum + tonumber(n)
      else redis.call('HDEL', key, all[j]) end
    end
  end
  sums[i] = sum
end
return sums
"""


class RedisState:
    """`SharedState` on Redis (redis-py asyncio; hiredis parses replies when installed)."""

    def __init__(self, settings: StateSettings) -> None:
        self._prefix = settings.key_prefix
        self._url = settings.redis_url
        # A pooled connection from before a server restart fails once: reconnect and retry
        # that one command at once instead of opening the breaker.
        self._client = connect(
            settings.redis_url,
            pool_size=POOL_SIZE,
            timeout=OPERATION_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            retry_on=[RedisConnectionError],
        )
        self._cluster = settings.redis_url.startswith(CLUSTER_SCHEMES)
        # The nonce-counts' own connection (`wire`); none in a Cluster (it routes no keys).
        self._link = (
            None
            if self._cluster
            else Link(self._client, OPERATION_TIMEOUT, partial(self._failed, "count_nonce"))
        )
        self._counting: set[asyncio.Task[None]] = set()
        self._window_add = self._client.register_script(_WINDOW_ADD)
        self._share_calls = self._client.register_script(_SHARE_CALLS)
        self._add = self._client.register_script(_ADD)
        self._channel = f"{self._prefix}{BANS_CHANNEL}"
        self._errors = 0
        self._down_until = 0.0
        self._down = False
        self._down_since = 0.0
        self._on_error: ErrorCallback | None = None
        self._bans: BanListener | None = None

    @property
    def shared(self) -> bool:
        return True

    @property
    def errors(self) -> int:
        return self._errors

    async def start(self, on_ban: BanCallback, on_error: ErrorCallback) -> None:
        self._on_error = on_error
        self._bans = BanListener(
            self._client, self._prefix, on_ban, failed=self._failed, connected=self._resubscribed
        )
        self._bans.start()

    async def close(self) -> None:
        bans, self._bans = self._bans, None
        if bans is not None:
            await bans.close()
        if self._link is not None:
            await self._link.close()
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()

    # -- calls ------------------------------------------------------------------------------

    async def count_nonce(self, nonce: str, nc: int, ttl: float) -> bool | None:
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self.count_nonce_then(nonce, nc, ttl, lambda answer: _settle(future, answer))
        return await future

    def count_nonce_then(self, nonce: str, nc: int, ttl: float, then: Answer) -> None:
        """One EVALSHA, answered from the event loop. On the wire: every count of one loop turn
        leaves in one write (~15 function calls a count, where redis-py's pool and pipeline took
        ~700: issue 15's CPU figure). In a Cluster: through redis-py's client, which routes it."""
        loop = asyncio.get_running_loop()
        if nc <= 0:
            loop.call_soon(then, False)
            return
        if self._down and time.monotonic() < self._down_until:
            self._errors += 1
            loop.call_soon(then, None)
            return
        key = f"{self._prefix}nc:{nonce}"
        if self._link is None:
            task = loop.create_task(self._count_in_cluster(key, nc, _ms(ttl), then))
            self._counting.add(task)
            task.add_done_callback(self._counting.discard)
            return
        command = pack(b"EVALSHA", _COUNT_NONCE_SHA, b"1", key, nc, _ms(ttl))
        self._link.call(command, partial(self._counted, command, time.monotonic(), then, True))

    def _counted(
        self, command: bytes, started: float, then: Answer, first: bool, reply: Any
    ) -> None:
        """A count's reply from the wire: a server that forgot the script (restarted, flushed)
        gets it loaded and the same count again, in order on the same connection."""
        if first and isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            assert self._link is not None
            self._link.call(pack(b"SCRIPT", b"LOAD", _COUNT_NONCE), _ignore)
            self._link.call(command, partial(self._counted, command, started, then, False))
            return
        if reply is LOST:
            self._failed("count_nonce", reply)
            reply = None
        elif isinstance(reply, Exception):
            self._errors += 1
            reply = None
        else:
            self._restored("count_nonce", started)
        then(None if reply is None else bool(reply))

    async def _count_in_cluster(self, key: str, nc: int, ttl_ms: int, then: Answer) -> None:
        async def evalsha() -> Any:
            try:
                return await self._client.evalsha(_COUNT_NONCE_SHA, 1, key, nc, ttl_ms)
            except NoScriptError:  # a node that forgot the script: load it, count again
                await self._client.script_load(_COUNT_NONCE)
                return await self._client.evalsha(_COUNT_NONCE_SHA, 1, key, nc, ttl_ms)

        answer = await self._call("count_nonce", evalsha)
        then(None if answer is None else bool(answer))

    async def kill_nonce(self, nonce: str, ttl: float) -> None:
        key = f"{self._prefix}nc:{nonce}"
        await self._call("kill_nonce", self._client.set, key, -1, px=_ms(ttl))

    async def add_failure(self, ip: str, window: float) -> int | None:
        key = f"{self._prefix}fail:{ip}"
        answer = await self._call("add_failure", self._window_add, [key], [1, _ms(window)])
        return None if answer is None else int(answer)

    async def publish_ban(self, ip: str, until: float) -> bool:
        ttl = until - time.time()
        if ttl <= 0:
            return True
        key = f"{self._prefix}{BAN_KEY}{ip}"
        # rare and what the others need most: tried even while the breaker is open
        return await self._store_and_tell(
            "publish_ban", ("set", key, repr(until), _ms(ttl)), f"{ip} {until!r}"
        )

    async def publish_unban(self, ip: str) -> bool:
        ban, fail = f"{self._prefix}{BAN_KEY}{ip}", f"{self._prefix}fail:{ip}"
        return await self._store_and_tell("publish_unban", ("delete", ban, fail), f"{ip} 0")

    async def _store_and_tell(self, operation: str, change: tuple[Any, ...], message: str) -> bool:
        """One change (SET with a TTL, or DEL of keys) and the message on the ban channel: in
        one pipeline, or one after the other in a Cluster (whose pipelines refuse PUBLISH; a
        DEL of keys of several slots is one DEL a key there too)."""
        kind, *args = change

        async def send() -> Any:
            target = self._client if self._cluster else self._client.pipeline(transaction=False)
            steps = [target.set(args[0], args[1], px=args[2])] if kind == "set" else []
            steps += [target.delete(key) for key in args] if kind == "delete" else []
            steps.append(target.publish(self._channel, message))
            if self._cluster:
                for step in steps:
                    await step
                return True
            return await target.execute()

        return await self._call(operation, send, always=True) is not None

    async def share_calls(
        self, instance: str, counts: dict[str, int], ttl: float
    ) -> dict[str, int] | None:
        if not counts:
            return {}
        trunks = list(counts)
        keys = [f"{self._prefix}{{calls}}:{trunk}" for trunk in trunks]
        args: list[Any] = [instance, _ms(ttl), *(max(0, counts[t]) for t in trunks)]
        answer = await self._call("share_calls", self._share_calls, keys, args)
        if answer is None:
            return None
        return {trunk: int(total) for trunk, total in zip(trunks, answer, strict=True)}

    async def add(self, key: str, amount: int, ttl: float) -> int | None:
        full = f"{self._prefix}c:{key}"
        answer = await self._call("add", self._add, [full], [amount, _ms(ttl)])
        return None if answer is None else int(answer)

    async def _call(
        self, operation: str, func: Any, *args: Any, always: bool = False, **kwargs: Any
    ) -> Any:
        """One bounded call; None on any failure (counted, reported once per outage). Only a
        call started after the outage began can end it (one already in flight proves nothing)."""
        started = time.monotonic()
        if self._down and started < self._down_until and not always:
            self._errors += 1
            return None
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT * 2):
                answer = await func(*args, **kwargs)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            self._failed(operation, exc)
            return None
        self._restored(operation, started)
        return answer

    def _restored(self, operation: str, started: float) -> None:
        """A call that succeeded: it ends the outage if it started after the outage began."""
        if self._down and started >= self._down_since:
            self._down = False
            if self._on_error is not None:
                self._on_error(operation, "")

    def _resubscribed(self) -> None:
        """The ban channel is (re)connected and the stored bans read: an outage is over."""
        if self._down:
            self._down = False
            if self._on_error is not None:
                self._on_error("subscribe", "")

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._errors += 1
        now = time.monotonic()
        self._down_until = now + RETRY_AFTER
        if not self._down:
            self._down = True
            self._down_since = now
            if self._on_error is not None:
                self._on_error(operation, f"{type(exc).__name__}: {str(exc)[:120]}")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _ignore(reply: Any) -> None:
    """The reply of a command whose answer nothing reads (SCRIPT LOAD before its retry)."""


def _settle(future: asyncio.Future[bool | None], answer: bool | None) -> None:
    if not future.done():
        future.set_result(answer)
