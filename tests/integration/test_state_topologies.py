"""`state.redis_url` of a Redis Sentinel service and of a Redis Cluster, against real servers on
loopback (tests/integration/redis_topologies.py): the SharedState contract between two
instances, and a Sentinel failover the store follows by itself.

Owns: the proof that the store works through redis-py's Sentinel and Cluster clients: nonce
counts, failure windows, counters, the calls-in-progress script over two trunks (two keys in
one script: in a Cluster only keys of one hash slot may be, which the `{calls}` hash tag
ensures; without it the script fails with CROSSSLOT and `share_calls` answers None), bans and
unbans heard by every instance (pub/sub), a stored ban read by an instance started later, an
unban deleting it. With Sentinel, after `SENTINEL FAILOVER` writes land on the new master.

Must never: target anything but loopback, leave a server running (stopped by PID), wait
without a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipguard.settings import StateSettings
from sipguard.state import SharedState, open_state
from tests.integration.redis_topologies import ClusterSetup, SentinelSetup, command
from tests.integration.test_state import Heard, until
from tests.polling import wait_for

pytestmark = pytest.mark.integration

SOURCE = "198.51.100.7"


@pytest.fixture(params=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    setup = (SentinelSetup if request.param == "sentinel" else ClusterSetup)(tmp_path / "redis")
    with setup:
        yield setup.url


async def _started(url: str) -> tuple[SharedState, Heard]:
    heard = Heard()
    state = open_state(StateSettings(backend="redis", redis_url=url))
    await state.start(heard.ban, heard.error)
    # A Cluster client learns the slots on its first call, which a loaded host may take longer
    # than a call's bound to answer: an outage at start, which ends by itself. Wait for its end.
    deadline = time.monotonic() + 15
    while await state.add("warm-up", 1, 30) is None:
        assert time.monotonic() < deadline, "the deployment never answered"
        await asyncio.sleep(0.2)  # the breaker tries again after RETRY_AFTER
    return state, heard


async def test_two_instances_share_everything(topology: str) -> None:
    (a, heard_a), (b, heard_b) = await _started(topology), await _started(topology)
    errors_a, errors_b = a.errors, b.errors
    try:
        for i in range(20):  # keys in many slots: on every node of a Cluster
            assert await a.count_nonce(f"n{i}", 1, 30) is True
            assert await b.count_nonce(f"n{i}", 1, 30) is False
        await b.kill_nonce("n0", 30)
        assert await a.count_nonce("n0", 5, 30) is False
        assert await a.add_failure(SOURCE, 60) == 1
        assert await b.add_failure(SOURCE, 60) == 2
        assert await a.add("trunk:demo", 2, 30) == 2
        assert await b.add("trunk:demo", -1, 30) == 1
        # one script, two trunks' keys: one slot thanks to the hash tag
        assert await a.share_calls("a", {"demo": 2, "other": 1}, 5) == {"demo": 0, "other": 0}
        assert await b.share_calls("b", {"demo": 1, "other": 0}, 5) == {"demo": 2, "other": 1}
        assert (a.errors, b.errors) == (errors_a, errors_b)  # none since warmed up

        await asyncio.sleep(0.3)  # both subscribers attached before the ban is published
        end = time.time() + 60
        assert await a.publish_ban(SOURCE, end) is True
        await until(lambda: heard_a.bans and heard_b.bans, 5, "the ban on both")
        assert heard_b.bans == [(SOURCE, end)]
        later, heard_later = await _started(topology)  # reads the stored ban
        await until(lambda: heard_later.bans, 5, "the stored ban")
        await later.close()
        assert await b.publish_unban(SOURCE) is True
        await until(lambda: len(heard_a.bans) == 2, 5, "the unban on a")
        assert heard_a.bans[1] == (SOURCE, 0.0)
        assert await a.add_failure(SOURCE, 60) == 1  # the window was forgotten with the ban
        last, heard_last = await _started(topology)  # no stored ban any more
        await asyncio.sleep(0.5)  # a ban, were one stored, is read at once on subscription
        assert heard_last.bans == []
        await last.close()
    finally:
        await a.close()
        await b.close()


def test_sentinel_failover_is_followed(tmp_path: Path) -> None:
    with SentinelSetup(tmp_path / "redis") as setup:
        asyncio.run(_failover(setup))


async def _failover(setup: SentinelSetup) -> None:
    state, _ = await _started(setup.url)
    try:
        assert await state.count_nonce("before", 1, 30) is True
        assert command(setup.master_port, "EXISTS", "sipguard:nc:before").strip() == "1"
        wait_for(  # replication is asynchronous: a failover loses what the replica lacks
            lambda: command(setup.replica_port, "EXISTS", "sipguard:nc:before").strip() == "1",
            10,
            "the count on the replica",
        )
        new = setup.failover()
        assert new == setup.replica_port
        deadline = time.monotonic() + 15
        while await state.count_nonce("after", 1, 30) is not True:
            assert time.monotonic() < deadline, "the store never reached the new master"
            await asyncio.sleep(0.2)  # the breaker tries again after RETRY_AFTER
        assert command(new, "EXISTS", "sipguard:nc:after").strip() == "1"
        assert await state.count_nonce("before", 1, 30) is False  # replicated before
    finally:
        await state.close()
