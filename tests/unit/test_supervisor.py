"""`sipguard.supervisor`'s rules (`sipguard.restarts`): when to give up, how long to wait
before a restart; and the worker's side of the contract (`sipguard.worker.WorkerRole`)."""

from __future__ import annotations

import io

from sipguard.restarts import (
    DEATH_WINDOW,
    MAX_DEATHS,
    MAX_RESTART_DELAY,
    RESTART_DELAY,
    STABLE_AFTER,
    DeathRule,
    restart_delay,
)
from sipguard.worker import METRICS_ENV, WORKER_ENV, WorkerRole


def test_gives_up_after_more_than_the_limit_within_the_window() -> None:
    rule = DeathRule()
    assert not any(rule.died(float(i)) for i in range(MAX_DEATHS))
    assert rule.died(float(MAX_DEATHS))  # one more within the window


def test_deaths_older_than_the_window_are_forgotten() -> None:
    rule = DeathRule()
    spaced = DEATH_WINDOW / MAX_DEATHS + 0.1  # never more than MAX_DEATHS in one window
    assert not any(rule.died(i * spaced) for i in range(10 * MAX_DEATHS))


def test_back_off_doubles_up_to_the_cap_and_resets_after_a_stable_run() -> None:
    delays = []
    delay = RESTART_DELAY / 2
    for _ in range(12):
        delay = restart_delay(delay, served=1.0)
        delays.append(delay)
    assert delays[:3] == [RESTART_DELAY, 2 * RESTART_DELAY, 4 * RESTART_DELAY]
    assert delays[-1] == MAX_RESTART_DELAY
    assert restart_delay(MAX_RESTART_DELAY, served=STABLE_AFTER) == RESTART_DELAY


def test_worker_role_reads_the_key_from_stdin_not_the_environment() -> None:
    key = bytes(range(32))
    env = {WORKER_ENV: "3", METRICS_ENV: "/run/x/metrics-3"}
    role = WorkerRole.from_environ(env, io.BytesIO(key.hex().encode() + b"\n"))
    assert role == WorkerRole(3, key, "/run/x/metrics-3")
    assert WorkerRole.from_environ({}, io.BytesIO(b"")) is None  # a lone daemon
    # no key on stdin (the config names one): None, and the config's is used
    assert WorkerRole.from_environ({WORKER_ENV: "0"}, io.BytesIO(b"")) == WorkerRole(0, None, None)
