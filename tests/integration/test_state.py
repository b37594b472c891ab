"""The SharedState contract, run against both backends (memory, and a real redis-server), and
Redis outages: None answers at once while it is down, errors counted and reported once, and
recovery by itself (calls and the ban subscription)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from sipguard.settings import StateSettings
from sipguard.state import SharedState, open_state
from tests.integration.redis_server import RedisServer

pytestmark = pytest.mark.integration


class Heard:
    def __init__(self) -> None:
        self.bans: list[tuple[str, float]] = []
        self.errors: list[tuple[str, str]] = []

    def ban(self, ip: str, until: float) -> None:
        self.bans.append((ip, until))

    def error(self, operation: str, detail: str) -> None:
        self.errors.append((operation, detail))


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling interval of a bounded wait


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SharedState]:
    if request.param == "memory":
        state = open_state(StateSettings())
    else:
        server = RedisServer(tmp_path / "redis").start()
        request.addfinalizer(server.stop)
        state = open_state(StateSettings(backend="redis", redis_url=server.url))
    await state.start(Heard().ban, Heard().error)
    try:
        yield state
    finally:
        await state.close()


async def test_nonce_count_accepted_once_and_increasing(backend: SharedState) -> None:
    assert await backend.count_nonce("n1", 1, 30) is True
    assert await backend.count_nonce("n1", 1, 30) is False  # replay
    assert await backend.count_nonce("n1", 3, 30) is True
    assert await backend.count_nonce("n1", 2, 30) is False  # decreasing
    assert await backend.count_nonce("n2", 1, 30) is True  # another nonce
    assert await backend.count_nonce("n3", 0, 30) is False


async def test_killed_nonce_refused(backend: SharedState) -> None:
    await backend.kill_nonce("k", 30)
    assert await backend.count_nonce("k", 1, 30) is False


async def test_failures_counted_in_a_window(backend: SharedState) -> None:
    assert [await backend.add_failure("192.0.2.1", 60) for _ in range(3)] == [1, 2, 3]
    assert await backend.add_failure("192.0.2.2", 60) == 1
    assert await backend.add_failure("192.0.2.3", 0.05) == 1
    await asyncio.sleep(0.1)  # the window's end is what is tested
    assert await backend.add_failure("192.0.2.3", 0.05) == 1


async def test_counters(backend: SharedState) -> None:
    assert await backend.add("trunk:a", 1, 30) == 1
    assert await backend.add("trunk:a", 2, 30) == 3
    assert await backend.add("trunk:a", -1, 30) == 2


async def test_redis_instances_share_everything(redis_server: RedisServer) -> None:
    settings = StateSettings(backend="redis", redis_url=redis_server.url)
    heard_a, heard_b = Heard(), Heard()
    a, b = open_state(settings), open_state(settings)
    await a.start(heard_a.ban, heard_a.error)
    await b.start(heard_b.ban, heard_b.error)
    try:
        assert await a.count_nonce("shared", 1, 30) is True
        assert await b.count_nonce("shared", 1, 30) is False
        assert await b.count_nonce("shared", 2, 30) is True
        assert await a.add_failure("198.51.100.7", 60) == 1
        assert await b.add_failure("198.51.100.7", 60) == 2
        await until(lambda: a.errors == 0 and b.errors == 0, 1, "no errors")
        await asyncio.sleep(0.3)  # let both subscribers attach before publishing
        end = time.time() + 60
        assert await a.publish_ban("198.51.100.7", end) is True
        await until(lambda: heard_b.bans and heard_a.bans, 1, "the ban on both")
        assert heard_b.bans == [("198.51.100.7", end)]
        # a third instance starting later reads the stored ban
        heard_c = Heard()
        c = open_state(settings)
        await c.start(heard_c.ban, heard_c.error)
        await until(lambda: heard_c.bans, 2, "the stored ban")
        assert heard_c.bans[0][0] == "198.51.100.7"
        await c.close()
    finally:
        await a.close()
        await b.close()


async def test_redis_outage_answers_none_and_recovers(redis_server: RedisServer) -> None:
    settings = StateSettings(backend="redis", redis_url=redis_server.url)
    heard = Heard()
    state = open_state(settings)
    await state.start(heard.ban, heard.error)
    try:
        assert await state.count_nonce("before", 1, 30) is True
        redis_server.kill()
        started = time.monotonic()
        answers = [await state.count_nonce(f"down{i}", 1, 30) for i in range(50)]
        assert answers == [None] * 50
        assert time.monotonic() - started < 1.0  # the breaker answers at once, no timeouts
        assert state.errors >= 50
        assert len([e for e in heard.errors if e[1]]) == 1  # one report per outage
        redis_server.start()
        await until(lambda: heard.errors[-1][1] == "", 10, "the subscriber back")
        await until(lambda: asyncio.ensure_future(asyncio.sleep(0)) and True, 1, "a loop turn")
        deadline = time.monotonic() + 5
        while await state.count_nonce("after", 1, 30) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the breaker reopens after RETRY_AFTER
        assert await state.count_nonce("after", 2, 30) is True
        await asyncio.sleep(0.2)  # the subscriber subscribed before the ban is published
        assert await state.publish_ban("203.0.113.9", time.time() + 60)
        await until(lambda: heard.bans, 2, "a ban after the outage")
    finally:
        await state.close()


async def test_counts_survive_a_script_cache_flush(redis_server: RedisServer) -> None:
    """A restarted (or flushed) server forgot the nonce script: the count loads it and is
    answered, on the same connection, without an error."""
    state = open_state(StateSettings(backend="redis", redis_url=redis_server.url))
    await state.start(Heard().ban, Heard().error)
    try:
        assert await state.count_nonce("flushed", 1, 30) is True
        with redis.Redis.from_url(redis_server.url) as admin:
            admin.script_flush()
        answers = await asyncio.gather(*(state.count_nonce("flushed", n, 30) for n in (2, 2, 3)))
        assert answers == [True, False, True]  # one loop turn, in order, after the reload
        assert state.errors == 0
    finally:
        await state.close()


async def test_stuck_server_answers_none_in_time_and_recovers(redis_server: RedisServer) -> None:
    """A server that stops answering (SIGSTOP) without closing: the waiting counts answer None
    within the operation timeout, and once it answers again so do the counts."""
    state = open_state(StateSettings(backend="redis", redis_url=redis_server.url))
    heard = Heard()
    await state.start(heard.ban, heard.error)
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    try:
        assert await state.count_nonce("stuck", 1, 30) is True
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        assert await state.count_nonce("stuck", 2, 30) is None
        assert time.monotonic() - started < 1.0
        assert len([e for e in heard.errors if e[1]]) == 1  # one report per outage
        os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 5
        while (answer := await state.count_nonce("stuck", 3, 30)) is None:
            assert time.monotonic() < deadline, "the counts never came back"
            await asyncio.sleep(0.1)  # the breaker lets a call through after RETRY_AFTER
        assert answer is True
    finally:
        os.kill(pid, signal.SIGCONT)
        await state.close()
