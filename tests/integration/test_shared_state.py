"""Two sipguard instances sharing one real redis-server (issue 15 acceptance):
- 5 wrong answers spread over both ban the source on both within 1 s;
- a digest answer admitted by A and replayed unchanged to B is refused;
- a right answer to a nonce issued by A is admitted by B;
- Redis killed during a 100 calls/s SIPp run: no failed call; Redis back: a ban propagates again.
Both instances share the nonce key (auth.secret_file), as a deployment must."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import V4, Daemon, Sipp, SippServer, demo_config, free_port
from tests.integration.redis_server import RedisServer
from tests.polling import wait_for
from tests.sipclient import SipClient, answer_challenge, pick_challenge

pytestmark = pytest.mark.integration

DaemonFactory = Callable[..., Daemon]
URI = "sip:sipguard.test"  # no port: the same Request-URI (and digest uri) for A and B


def pair(
    tmp_path: Path, factory: DaemonFactory, redis: RedisServer, upstream: SippServer, **state: str
) -> tuple[tuple[Daemon, int], tuple[Daemon, int]]:
    key = tmp_path / "nonce.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    made = []
    for name in ("a", "b"):
        port = free_port("udp")
        config = demo_config(
            listen=[f"udp://{V4}:{port}"],
            upstream=[upstream.uri],
            whitelist=[V4],
            extra={"state": {"backend": "redis", "redis_url": redis.url, **state}},
        )
        config["auth"]["secret_file"] = str(key)
        # the load generator's one address must not meet the per-source rate limit
        config["protection"] = {
            "ban_failures": 5, "ban_window": 60, "ban_duration": 60, "rate": 2000, "burst": 4000,
        }  # fmt: skip
        made.append((factory(config, name=name), port))
    a, b = made
    wait_for(lambda: all(d.find_event("state_restored") is None for d, _ in made), 1, "no outage")
    return a, b


def challenge_from(port: int) -> tuple[SipClient, dict[str, str]]:
    client = SipClient(V4, port, "udp", user="alice")
    first = client.request("REGISTER", URI)
    assert first.status == 401, first
    _, params = pick_challenge(first, "MD5")
    return client, params


def register_with(client: SipClient, params: dict[str, str], password: str, nc: int = 1) -> Any:
    value = answer_challenge(params, "REGISTER", URI, "alice", password, nc, None)
    return client.request("REGISTER", URI, headers=[("Authorization", value)])


def test_nonce_from_a_admitted_by_b_and_replay_to_b_refused(
    tmp_path: Path, daemon_factory: DaemonFactory, redis_server: RedisServer, sipp: Sipp
) -> None:
    upstream = sipp.start_uas()
    (_, port_a), (b, port_b) = pair(tmp_path, daemon_factory, redis_server, upstream)
    # a right answer to a nonce issued by A is admitted by B
    client_a, params = challenge_from(port_a)
    with SipClient(V4, port_b, "udp", user="alice") as client_b:
        value = answer_challenge(params, "REGISTER", URI, "alice", "s3cret", 1, None)
        assert client_b.request("REGISTER", URI, headers=[("Authorization", value)]).status == 200
    # the same answer admitted once (by B) and sent again, unchanged, to A: a replay
    with SipClient(V4, port_a, "udp", user="alice") as replay:
        status = replay.request("REGISTER", URI, headers=[("Authorization", value)]).status
    assert status == 403
    # and the other way round: admitted by A, replayed to B
    client2, params2 = challenge_from(port_a)
    value2 = answer_challenge(params2, "REGISTER", URI, "alice", "s3cret", 1, None)
    assert client2.request("REGISTER", URI, headers=[("Authorization", value2)]).status == 200
    with SipClient(V4, port_b, "udp", user="alice") as replay_b:
        assert replay_b.request("REGISTER", URI, headers=[("Authorization", value2)]).status == 403
    assert b.find_event("auth_failed", detail="nonce-count replayed") is not None
    client_a.close()
    client2.close()


def test_failures_spread_over_both_ban_on_both_within_a_second(
    tmp_path: Path, daemon_factory: DaemonFactory, redis_server: RedisServer, sipp: Sipp
) -> None:
    upstream = sipp.start_uas()
    (a, port_a), (b, port_b) = pair(tmp_path, daemon_factory, redis_server, upstream)
    for i in range(5):
        port = port_a if i % 2 == 0 else port_b
        client, params = challenge_from(port)
        assert register_with(client, params, "wrong").status == 403
        client.close()
    started = time.monotonic()
    a.wait_event("banned", timeout=1.0, src_ip=V4)
    b.wait_event("banned", timeout=max(0.05, 1.0 - (time.monotonic() - started)), src_ip=V4)
    for port in (port_a, port_b):  # dropped on both: no answer at all
        with SipClient(V4, port, "udp", timeout=0.5) as client, pytest.raises(TimeoutError):
            client.request("REGISTER", URI)


def test_redis_killed_during_calls_no_failed_call_and_bans_propagate_again(
    tmp_path: Path, daemon_factory: DaemonFactory, redis_server: RedisServer, sipp: Sipp
) -> None:
    upstream = sipp.start_uas()
    (a, port_a), (b, _) = pair(tmp_path, daemon_factory, redis_server, upstream)

    killer = threading.Timer(2.0, redis_server.kill)
    killer.start()
    try:
        result = sipp.run(
            "uac_register_auth.xml", f"{V4}:{port_a}", calls=600, rate=100, timeout_s=40
        )
    finally:
        killer.cancel()
    assert redis_server.proc is None, "redis-server was not killed during the run"
    assert result.ok and result.successful == 600, result.explain()
    a.wait_event("state_unreachable", timeout=5)
    # Redis back: a new ban reaches the other instance again
    redis_server.start()
    a.wait_event("state_restored", timeout=10)
    b.wait_event("state_restored", timeout=10)
    for _ in range(10):  # 127.0.0.1 authenticated during the run: proven, banned at 2 x 5
        client, params = challenge_from(port_a)
        assert register_with(client, params, "wrong").status == 403
        client.close()
    b.wait_event("banned", timeout=2.0, src_ip=V4)
