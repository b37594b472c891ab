"""The host's admin service under `workers: N` (sipguard.admin.host and .merge): two workers'
control sockets served for real (the admin routes over Unix sockets, each over its own guard),
the supervisor doubled by `FakeHost`; and the merge rules on the workers' JSON."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sipguard.admin.api import AdminListener, start_control
from sipguard.admin.daemon import DaemonBackend, LocalService
from sipguard.admin.host import HostService, WorkerControl
from sipguard.admin.merge import MIXED, merge_bans, merge_trunks, merge_upstreams
from sipguard.admin.views import ServiceError
from sipguard.settings import Settings
from tests.unit.admin.conftest import GuardCore, Recorder, Reloader, make_settings


class FakeHost:
    """The supervisor as `HostService` sees it: worker slots, settings, a reload to answer."""

    def __init__(self, controls: list[WorkerControl]) -> None:
        self.slots = controls
        self.settings: Settings = make_settings(None)
        self.started = time.time() - 5
        self.problems: list[str] = []
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def controls(self) -> list[WorkerControl]:
        return list(self.slots)

    async def reload_workers(self) -> list[str]:
        return list(self.problems)

    def note(self, level: str, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


class Workers:
    def __init__(self, cores: list[GuardCore], host: FakeHost, listeners: list[AdminListener]):
        self.cores = cores
        self.host = host
        self.service = HostService(host)
        self.listeners = listeners


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    cores, listeners, slots = [], [], []
    for index in range(2):
        core = GuardCore()
        backend = DaemonBackend(Reloader(make_settings(None)), core, Recorder(), "x.yaml")
        path = str(tmp_path / f"control-{index}")
        listeners.append(await start_control(path, LocalService(backend)))
        cores.append(core)
        slots.append(WorkerControl(index, 1000 + index, path))
    try:
        yield Workers(cores, FakeHost(slots), listeners)
    finally:
        for listener in listeners:
            await listener.close()


async def test_ban_and_unban_reach_every_worker(workers: Workers) -> None:
    view = await workers.service.ban("203.0.113.9", 600)
    assert view is not None and view["address"] == "203.0.113.9"
    now = time.time()
    assert all(core.guard.is_banned("203.0.113.9", now) for core in workers.cores)
    # a ban one worker placed on its own (its guard counted failures) shows once, merged
    workers.cores[1].guard.ban("198.51.100.1", now, 60)
    bans = await workers.service.bans()
    assert [b["address"] for b in bans] == ["203.0.113.9", "198.51.100.1"]
    assert await workers.service.unban("198.51.100.1")  # held by worker 1 only
    assert await workers.service.unban("203.0.113.9")
    assert not any(core.guard.is_banned("203.0.113.9", time.time()) for core in workers.cores)
    assert not await workers.service.unban("203.0.113.9")  # on no worker: 404
    assert await workers.service.bans() == []


async def test_a_worker_that_does_not_answer_is_named(workers: Workers) -> None:
    await workers.listeners[1].close()  # worker 1 gone (its socket refuses)
    with pytest.raises(ServiceError) as caught:
        await workers.service.ban("203.0.113.9", 600)
    assert caught.value.status == 503 and caught.value.extra == {"workers": [1]}
    assert "worker 1 did not answer" in str(caught.value) and "the others only" in str(caught.value)
    assert workers.cores[0].guard.is_banned("203.0.113.9", time.time())  # placed on worker 0
    workers.host.slots[1] = WorkerControl(1, None, workers.host.slots[1].path)  # restarting
    with pytest.raises(ServiceError) as read:
        await workers.service.bans()
    assert read.value.status == 503 and "the others" not in str(read.value)


async def test_status_and_reload_are_the_hosts(workers: Workers) -> None:
    status = await workers.service.status()
    assert status["workers"] == 2 and status["worker_pids"] == [1000, 1001]
    assert 4 < status["uptime_seconds"] < 60
    workers.host.problems = ["worker 1: x.yaml: tls: cannot read the certificate"]
    assert await workers.service.reload() == workers.host.problems


async def test_trunks_summed_over_workers(workers: Workers) -> None:
    [one, two] = [await _local_trunks(core) for core in workers.cores]
    assert one == two  # same file, no traffic
    merged = await workers.service.trunks()
    assert [t["name"] for t in merged] == ["acme", "open"]
    assert merged[0]["limits"] == one[0]["limits"]


async def _local_trunks(core: GuardCore) -> list[Any]:
    backend = DaemonBackend(Reloader(make_settings(None)), core, Recorder(), "x.yaml")
    return await LocalService(backend).trunks()


def _trunk(active: int, elsewhere: int, calls: int, refused: dict[str, int]) -> dict[str, Any]:
    return {
        "name": "acme",
        "limits": {"concurrent_calls": 5},
        "active_calls": active,
        "active_calls_elsewhere": elsewhere,
        "admitted": {"calls": calls, "registrations": 1},
        "refused": refused,
    }


def test_trunk_counts_added_and_elsewhere_is_other_hosts() -> None:
    # shared state: each worker's "elsewhere" counts its sibling (3 and 2) plus 4 on other hosts
    [trunk] = merge_trunks(
        [
            [_trunk(2, 3 + 4, 10, {"calls_per_second": 1})],
            [_trunk(3, 2 + 4, 5, {"calls_per_second": 2, "concurrent_calls": 1})],
        ]
    )
    assert trunk["active_calls"] == 5 and trunk["active_calls_elsewhere"] == 4
    assert trunk["admitted"] == {"calls": 15, "registrations": 2}
    assert trunk["refused"] == {"calls_per_second": 3, "concurrent_calls": 1}
    # local state: nobody elsewhere
    [alone] = merge_trunks([[_trunk(2, 0, 1, {})], [_trunk(3, 0, 1, {})]])
    assert alone["active_calls_elsewhere"] == 0


def _upstream(state: str, failures: int, forwarded: int) -> dict[str, Any]:
    return {
        "uri": "sip:10.0.0.1",
        "state": state,
        "since": None,
        "last_probe": None,
        "consecutive_failures": failures,
        "consecutive_successes": 0,
        "forwarded": forwarded,
        "failed_over": 1,
        "timeouts": 0,
    }


def test_upstreams_agreeing_and_differing() -> None:
    [same] = merge_upstreams([(0, [_upstream("up", 0, 4)]), (1, [_upstream("up", 0, 6)])])
    assert same["state"] == "up" and same["forwarded"] == 10 and same["failed_over"] == 2
    assert "workers" not in same
    [mixed] = merge_upstreams([(0, [_upstream("up", 0, 4)]), (1, [_upstream("down", 3, 0)])])
    assert mixed["state"] == MIXED
    assert [(w["worker"], w["state"], w["consecutive_failures"]) for w in mixed["workers"]] == [
        (0, "up", 0),
        (1, "down", 3),
    ]


def test_bans_union_keeps_the_widest() -> None:
    a = {"address": "192.0.2.1", "since": "2026-12-02T09:00:00Z", "until": "2026-12-02T09:10:00Z",
         "failures": 5}  # fmt: skip
    b = {**a, "since": "2026-12-02T09:01:00Z", "until": "2026-12-02T09:11:00Z", "failures": 2}
    assert merge_bans([[a], [b]]) == [{**a, "until": b["until"]}]
