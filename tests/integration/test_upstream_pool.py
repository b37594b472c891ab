"""Acceptance of the upstream pool (issue 14) with real peers: SIPp UASes as the platform's SIP
servers, SIPp (digest) and the test client as callers, sipguard in between.

Owns: the issue's acceptance list: a priority-1 upstream stopped and started again under load
(failures only among the calls it held, both upstreams used afterwards, gauge and events down
then up); an upstream answering every INVITE 503 (every call completes through the other); an
upstream answering 180 then 503 (that answer, no retry); every upstream down (503 with
Retry-After at once, nothing forwarded until one is back); a priority-2 upstream used only while
no priority-1 one is up; a CANCEL for a call that failed over reaching the ringing branch.

Time is scaled down from the issue's 30 s at 100 calls/s (the machine is shared): 12 s at
20 calls/s, the upstream stopped at second 4 and started at second 8, probes every second.
`SIPGUARD_POOL_FULL=1` runs the issue's figures (30 s, 100 calls/s, stop at 10, start at 20,
probes every 2 s with the issue's 2 s timeout).
Must never: use a non-loopback address, sleep to synchronise, leave a process running.

RFC 3261 §16.6 (sequential search), §16.7 (responses), §17.1.1.3 (ACK of a failed branch),
§9 (CANCEL), §21.5.4 (503, Retry-After §20.33), §11 (OPTIONS).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.harness import (
    PASSWORD,
    USER,
    V4,
    Daemon,
    Sipp,
    SippResult,
    SippServer,
    demo_config,
    free_port,
    hostport,
    received_statuses,
)
from tests.polling import wait_for
from tests.sipclient import SipClient

pytestmark = pytest.mark.integration

FULL = os.environ.get("SIPGUARD_POOL_FULL") == "1"
# (seconds of calls, calls per second, stop at, start again at)
LOAD = (30.0, 100.0, 10.0, 20.0) if FULL else (12.0, 20.0, 4.0, 8.0)
# Probes every second: a fifth of the issue's example, so that down and up fit in seconds. The
# timeouts stay at a second and more: on a busy shared machine an answer can take that long.
FAST_HEALTH = {
    "probe_interval": 1,
    "probe_timeout": 1,
    "down_after": 3,
    "up_after": 2,
    "failover_timeout": 2,
}
# For the issue's load: at 100 calls/s a busy host answers a probe late (2 s timeout, as the
# issue's example), and probes every 2 s detect a 10 s outage (every 5 s might not).
ISSUE_HEALTH = {
    "probe_interval": 2,
    "probe_timeout": 2,
    "down_after": 3,
    "up_after": 2,
    "failover_timeout": 2,
}


# --------------------------------------------------------------------------- helpers


@dataclass
class Message:
    at: datetime
    sent: bool
    first_line: str
    call_id: str
    cseq_method: str


def messages_of(log: str) -> list[Message]:
    """Every message of a SIPp -trace_msg file, with its time, direction and Call-ID."""
    found = []
    blocks = re.split(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n", log, flags=re.M)
    for stamp, block in zip(blocks[1::2], blocks[2::2], strict=False):
        lines = block.split("\n")
        if len(lines) < 3:
            continue
        call_id = cseq = ""
        for line in lines[3:]:
            if not line.strip():
                break
            name, _, value = line.partition(":")
            key = name.strip().lower()
            if key in ("call-id", "i"):
                call_id = value.strip()
            elif key == "cseq":
                cseq = value.split()[-1] if value.split() else ""
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
        found.append(Message(at, "message sent" in lines[0], lines[2], call_id, cseq))
    return found


def invites(messages: Sequence[Message]) -> list[Message]:
    return [m for m in messages if not m.sent and m.first_line.startswith("INVITE ")]


def call_outcomes(messages: Sequence[Message]) -> tuple[set[str], set[str]]:
    """(Call-IDs that completed: 200 to their BYE; Call-IDs that did not)."""
    started = {m.call_id for m in messages if m.sent and m.first_line.startswith("INVITE ")}
    done = {
        m.call_id
        for m in messages
        if not m.sent and m.first_line.startswith("SIP/2.0 200") and m.cseq_method == "BYE"
    }
    return done, started - done


def open_calls(messages: Sequence[Message]) -> set[str]:
    """Call-IDs a UAS received an INVITE for and not yet the BYE: the calls it held."""
    invited = {m.call_id for m in invites(messages)}
    ended = {m.call_id for m in messages if not m.sent and m.first_line.startswith("BYE ")}
    return invited - ended


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{V4}:{port}/metrics", timeout=2) as answer:
        text: str = answer.read().decode()
        return text


def gauge(port: int, uri: str) -> float | None:
    for line in scrape(port).splitlines():
        if line.startswith(f'sipguard_upstream_up{{upstream="{uri}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def counter(port: int, uri: str, outcome: str) -> float:
    prefix = f'sipguard_upstream_requests_total{{outcome="{outcome}",upstream="{uri}"}}'
    for line in scrape(port).splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def events(daemon: Daemon, name: str, **fields: object) -> list[dict[str, Any]]:
    return [
        e
        for e in daemon.logs()
        if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
    ]


@dataclass
class Pool:
    daemon: Daemon
    uases: list[SippServer]
    port: int  # sipguard's UDP/TCP port on 127.0.0.1
    metrics: int
    uris: list[str] = field(default_factory=list)

    @property
    def remote(self) -> str:
        return hostport(V4, self.port)


@pytest.fixture
def pool_factory(sipp: Sipp, daemon_factory: DaemonFactory) -> Iterator[Any]:
    def make(
        scenarios: Sequence[str],
        priorities: Sequence[int] | None = None,
        health: dict[str, float] | None = None,
    ) -> Pool:
        uases = [sipp.start_uas(s, V4) for s in scenarios]
        priorities = priorities or [1] * len(uases)
        uris = [u.uri for u in uases]
        port = free_port("both", V4)
        metrics = free_port("tcp", V4)
        config = demo_config(
            listen=[f"udp://{V4}:{port}", f"tcp://{V4}:{port}"],
            upstream=[{"uri": uri, "priority": p} for uri, p in zip(uris, priorities, strict=True)],
            whitelist=[V4],
            metrics_port=metrics,
            extra={
                "upstream_health": health or FAST_HEALTH,
                "limits": {"shutdown_grace": 1},
                # one SIPp source at 100 calls/s is above the per-source rate limit (50/s)
                "protection": {"never_ban": [V4]},
                "log": {"level": os.environ.get("SIPGUARD_POOL_LOG", "info"), "format": "json"},
            },
        )
        return Pool(daemon_factory(config), uases, port, metrics, uris)

    yield make


def _assert_ok(result: SippResult, daemon: Daemon) -> None:
    assert result.ok, result.explain() + "\n--- sipguard ---\n" + daemon.describe()


# --------------------------------------------------------------------------- acceptance


def test_upstream_stopped_and_started_under_load(pool_factory: Any, sipp: Sipp) -> None:
    duration, rate, stop_at, start_at = LOAD
    pool: Pool = pool_factory(["uas.xml", "uas.xml"], health=ISSUE_HEALTH if FULL else None)
    first, second = pool.uases
    results: list[SippResult] = []
    calls = int(duration * rate)

    def call() -> None:
        results.append(
            sipp.run(
                "uac_invite_auth.xml",
                pool.remote,
                calls=calls,
                rate=rate,
                limit=int(rate * 2),
                pause_ms=200,
                timeout_s=duration + 20,
                recv_timeout_ms=5000,
            )
        )

    began = time.monotonic()
    caller = threading.Thread(target=call)
    caller.start()
    try:
        wait_for(lambda: time.monotonic() - began >= stop_at, stop_at + 1, "second stop_at")
        first.stop()
        stopped_log = first.messages()
        wait_for(lambda: gauge(pool.metrics, pool.uris[0]) == 0, 15, "the gauge to show down")
        down_at = time.monotonic() - began
        wait_for(lambda: time.monotonic() - began >= start_at, start_at + 1, "second start_at")
        restarted = sipp.start_uas("uas.xml", V4, port=first.port)
        restarted_at = datetime.now()
        wait_for(lambda: gauge(pool.metrics, pool.uris[0]) == 1, 10, "the gauge to show up")
        up_at = time.monotonic() - began
    finally:
        caller.join(duration + 40)
    [result] = results
    client = messages_of(result.messages)
    done, failed = call_outcomes(client)
    held = open_calls(messages_of(stopped_log))
    report = (
        f"{len(done)} calls completed, {len(failed)} failed; the stopped upstream held "
        f"{len(held)} calls; marked down at {down_at:.1f} s (stopped at {stop_at}), "
        f"up at {up_at:.1f} s (started at {start_at})"
    )
    print(report)  # the acceptance figures, for the report (pytest -s)
    assert len(done) + len(failed) == calls, report
    # no failed call outside the detection window: every failure is a call the stopped
    # upstream had taken (its BYE, or its final answer, had nowhere to go)
    assert failed <= held, f"{report}; failed elsewhere: {sorted(failed - held)[:10]}"
    # both upstreams take calls after the restart
    after = [m for m in invites(messages_of(second.messages())) if m.at >= restarted_at]
    assert invites(messages_of(restarted.messages())), report
    assert after, report
    down = events(pool.daemon, "upstream_down", upstream=pool.uris[0])
    up = events(pool.daemon, "upstream_up", upstream=pool.uris[0])
    assert down and up and down[0]["timestamp"] < up[0]["timestamp"]
    assert down[0]["reason"] in ("timeout", "transport_error")
    assert up[0]["reason"] == "answered"
    assert not events(pool.daemon, "upstream_down", upstream=pool.uris[1])


def test_every_invite_503_completes_through_the_other(pool_factory: Any, sipp: Sipp) -> None:
    pool: Pool = pool_factory(["uas_unavailable.xml", "uas.xml"])
    refusing, working = pool.uases
    result = sipp.run("uac_invite_auth.xml", pool.remote, calls=20, rate=10, limit=20)
    _assert_ok(result, pool.daemon)
    assert result.successful == 20
    refused = invites(messages_of(refusing.messages()))
    assert refused, "no call was hashed to the refusing upstream: the test proves nothing"
    assert len(invites(messages_of(working.messages()))) == 20
    # every refused INVITE was acknowledged by sipguard (RFC 3261 §17.1.1.3) and failed over
    acks = [m for m in messages_of(refusing.messages()) if m.first_line.startswith("ACK ")]
    wait_for(
        lambda: len(events(pool.daemon, "failover", reason="503")) >= len(refused), 5, "events"
    )
    assert {m.call_id for m in acks} == {m.call_id for m in refused}
    failover = events(pool.daemon, "failover", reason="503")[0]
    assert (failover["upstream"], failover["next_upstream"]) == tuple(pool.uris)
    assert counter(pool.metrics, pool.uris[0], "failed_over") == len(refused)


def test_ringing_then_503_is_relayed_and_not_retried(pool_factory: Any, sipp: Sipp) -> None:
    pool: Pool = pool_factory(["uas_ringing_unavailable.xml", "uas_ringing_unavailable.xml"])
    result = sipp.run("uac_invite_expect_503.xml", pool.remote, calls=10, rate=10, limit=10)
    _assert_ok(result, pool.daemon)
    assert received_statuses(result.messages).count(503) >= 10
    seen = [invites(messages_of(u.messages())) for u in pool.uases]
    # each call reached exactly one upstream: the 503 after the 180 was not retried
    call_ids = [m.call_id for ms in seen for m in ms]
    assert len(call_ids) == len(set(call_ids)) == 10
    assert not events(pool.daemon, "failover")


def test_all_upstreams_down_gives_503_at_once(pool_factory: Any, sipp: Sipp) -> None:
    pool: Pool = pool_factory(["uas.xml", "uas.xml"])
    for uas in pool.uases:
        uas.stop()
    for uri in pool.uris:
        pool.daemon.wait_event("upstream_down", timeout=10, upstream=uri)
    forwarded = [counter(pool.metrics, uri, "forwarded") for uri in pool.uris]
    began = time.monotonic()
    with SipClient(V4, pool.port, "udp", timeout=3) as client:
        answer = client.request_with_auth(
            "INVITE", f"sip:service@{pool.remote}", USER, PASSWORD, "MD5"
        )
    elapsed = time.monotonic() - began
    print(f"all down: digest INVITE answered {answer.status} in {elapsed:.3f} s (two round trips)")
    assert answer.status == 503 and answer.header("Retry-After"), answer
    assert elapsed < 1.0, elapsed
    assert [counter(pool.metrics, uri, "forwarded") for uri in pool.uris] == forwarded
    # one comes back: calls flow again
    back = sipp.start_uas("uas.xml", V4, port=pool.uases[1].port)
    pool.daemon.wait_event("upstream_up", timeout=10, upstream=pool.uris[1])
    result = sipp.run("uac_invite_auth.xml", pool.remote, calls=3, rate=10)
    _assert_ok(result, pool.daemon)
    assert len(invites(messages_of(back.messages()))) == 3


def test_priority_two_only_while_no_priority_one_is_up(pool_factory: Any, sipp: Sipp) -> None:
    pool: Pool = pool_factory(["uas.xml", "uas.xml"], priorities=[1, 2])
    primary, backup = pool.uases
    _assert_ok(sipp.run("uac_invite_auth.xml", pool.remote, calls=10, rate=20), pool.daemon)
    assert len(invites(messages_of(primary.messages()))) == 10
    assert invites(messages_of(backup.messages())) == []
    primary.stop()
    pool.daemon.wait_event("upstream_down", timeout=10, upstream=pool.uris[0])
    _assert_ok(sipp.run("uac_invite_auth.xml", pool.remote, calls=5, rate=20), pool.daemon)
    assert len(invites(messages_of(backup.messages()))) == 5
    again = sipp.start_uas("uas.xml", V4, port=primary.port)
    pool.daemon.wait_event("upstream_up", timeout=10, upstream=pool.uris[0])
    _assert_ok(sipp.run("uac_invite_auth.xml", pool.remote, calls=5, rate=20), pool.daemon)
    assert len(invites(messages_of(again.messages()))) == 5
    assert len(invites(messages_of(backup.messages()))) == 5


def test_cancel_after_failover_reaches_the_ringing_branch(pool_factory: Any, sipp: Sipp) -> None:
    # the ringing UAS answers no OPTIONS: probing is off here, failover is by the 503
    health = {**FAST_HEALTH, "probe_interval": 0}
    pool: Pool = pool_factory(["uas_unavailable.xml", "uas_ringing_cancel.xml"], health=health)
    refusing, ringing = pool.uases
    result = sipp.run("uac_invite_cancel.xml", pool.remote, calls=6, rate=10, limit=6)
    _assert_ok(result, pool.daemon)
    failed_over = {m.call_id for m in invites(messages_of(refusing.messages()))}
    assert failed_over, "no call was hashed to the refusing upstream: the test proves nothing"
    cancels = {
        m.call_id
        for m in messages_of(ringing.messages())
        if not m.sent and m.first_line.startswith("CANCEL ")
    }
    assert failed_over <= cancels
    assert len(cancels) == 6


def test_timer_c_cancels_a_branch_that_rings_forever(pool_factory: Any, sipp: Sipp) -> None:
    # RFC 3261 §16.8: an INVITE branch that rang and then said nothing for Timer C (here 2 s
    # instead of > 3 min) is CANCELled toward the upstream, and the caller gets 408; the 487
    # that answers the CANCEL is acknowledged by sipguard and never reaches the caller.
    health = {**FAST_HEALTH, "probe_interval": 0, "timer_c": 2}  # SIPp rings, answers no OPTIONS
    pool: Pool = pool_factory(["uas_ringing_cancel.xml"], health=health)
    [ringing] = pool.uases
    began = time.monotonic()
    result = sipp.run("uac_invite_expect_408.xml", pool.remote, calls=4, rate=10, limit=4)
    elapsed = time.monotonic() - began
    _assert_ok(result, pool.daemon)
    statuses = received_statuses(result.messages)
    assert statuses.count(408) >= 4 and 487 not in statuses, statuses
    assert elapsed >= 2.0, elapsed  # nothing before Timer C

    def upstream_saw() -> tuple[set[str], set[str], set[str]]:
        """The Call-IDs the UAS was INVITEd, CANCELled and ACKed for."""
        upstream = messages_of(ringing.messages())
        received = [m for m in upstream if not m.sent]
        return (
            {m.call_id for m in invites(upstream)},
            {m.call_id for m in received if m.first_line.startswith("CANCEL ")},
            {m.call_id for m in received if m.first_line.startswith("ACK ")},
        )

    # The caller's 408 and the CANCEL leave together: the UAS may log its CANCEL, and the ACK
    # of its 487, a moment after the caller is done (later still on a loaded host).
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: len(set(map(frozenset, upstream_saw()))) == 1, 5, "CANCELs and ACKs")
    invited, cancelled, acked = upstream_saw()
    assert len(invited) == 4 and cancelled == invited and acked == invited
    assert counter(pool.metrics, pool.uris[0], "timeout") == 4
