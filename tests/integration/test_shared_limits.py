"""Two sipguard instances sharing one real redis-server (issue 17 acceptance, last line):
- an unban on one instance applies to both: a source banned by its failures on A (and so on
  B), lifted through A's admin API, is served by B at once; a ban placed through B's admin API
  reaches A, and `sipguard admin unban` on B lets the source into A again;
- concurrent calls are counted across both: with `concurrent_calls: 2`, two calls held on A
  leave no room on B (503 once one exchange period has passed, ~1 s), and once A is gone its
  count expires (3 s) and B admits again.

Must never: target anything but loopback; synchronise with a fixed sleep (every wait polls with
a deadline); leave a process behind (the daemons, SIPp and redis-server are stopped by PID in
the fixtures' teardown).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.harness import PASSWORD, V4, Sipp, demo_config, free_port
from tests.integration.redis_server import RedisServer
from tests.integration.test_limits_admin import API_POLL, TOKEN, Stack, invite
from tests.integration.test_protection import UdpPeer, get_banned
from tests.polling import wait_for

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.5"
CALLER = "127.0.0.6"  # trunk "capped"


def shared_pair(
    sipp: Sipp,
    daemon_factory: DaemonFactory,
    redis: RedisServer,
    tmp_path: Path,
    trunks: list[dict[str, Any]],
) -> tuple[Stack, Stack]:
    """Two daemons (udp, metrics, admin API) in front of one SIPp UAS, sharing `redis`."""
    uas = sipp.start_uas("uas.xml", V4)
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    stacks = []
    for name in ("a", "b"):
        port, metrics_port, admin_port = free_port("udp"), free_port("tcp"), free_port("tcp")
        config = demo_config(
            listen=[f"udp://{V4}:{port}"],
            upstream=[f"sip:{V4}:{uas.port};transport=udp"],
            metrics_port=metrics_port,
            extra={
                "trunks": trunks,
                "admin": {"listen": f"{V4}:{admin_port}", "token_file": str(token_file)},
                "limits": {"shutdown_grace": 1.0},
                "state": {"backend": "redis", "redis_url": redis.url},
            },
        )
        daemon = daemon_factory(config, name=name)
        daemon.wait_event("admin_listening", timeout=10)
        stacks.append(Stack(daemon, port, metrics_port, admin_port))
    return stacks[0], stacks[1]


def served(stack: Stack, source: str) -> bool:
    """`source` is answered by `stack` (a REGISTER with the right password gets its 200)."""
    with UdpPeer(source, (V4, stack.port)) as peer:
        _, answer = peer.register(PASSWORD, timeout=0.5)
        return answer is not None and answer.status == 200


def dropped(stack: Stack, source: str) -> bool:
    with UdpPeer(source, (V4, stack.port)) as peer:
        return peer.transact(peer.build(), timeout=0.5) is None


def test_unban_on_one_instance_applies_to_both(
    sipp: Sipp, daemon_factory: DaemonFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    trunk = {
        "name": "demo",
        "whitelist": [V4, ATTACKER],
        "credentials": [{"username": "alice", "password": PASSWORD}],
    }
    a, b = shared_pair(sipp, daemon_factory, redis_server, tmp_path, [trunk])
    # banned by its failures on A: B hears the ban and drops the source too
    get_banned(type("Edge", (), {"target": (V4, a.port), "daemon": a.daemon})(), ATTACKER)
    b.daemon.wait_event("banned", timeout=5, src_ip=ATTACKER)
    assert dropped(b, ATTACKER)
    assert [x["address"] for x in b.api("GET", "/v1/bans")[1]["bans"]] == [ATTACKER]

    # lifted on A through the API: B serves it at once (and forgets its failures: one more
    # wrong answer does not ban it again)
    assert a.api("DELETE", f"/v1/bans/{ATTACKER}") == (200, {"unbanned": ATTACKER})
    wait_for(lambda: served(b, ATTACKER), 3, "B serves the source lifted on A", interval=API_POLL)
    b.daemon.wait_event("unbanned", timeout=5, src_ip=ATTACKER, reason="lifted")
    assert b.api("GET", "/v1/bans")[1]["bans"] == []
    assert served(a, ATTACKER)
    with UdpPeer(ATTACKER, (V4, b.port)) as peer:
        _, answer = peer.register("not-the-password")
        assert answer is not None and answer.status == 403
    assert served(b, ATTACKER)

    # banned through B's API: published like any ban, A drops the source
    status, body = b.api("POST", "/v1/bans", {"address": ATTACKER, "duration": 600})
    assert status == 200, body
    a.daemon.wait_event("banned", timeout=5, src_ip=ATTACKER)
    wait_for(lambda: dropped(a, ATTACKER), 3, "A drops the source banned on B", interval=API_POLL)
    # `sipguard admin unban` on B: A serves it at once
    lifted = b.cli("unban", ATTACKER)
    assert (lifted.returncode, lifted.stdout) == (0, f"unbanned {ATTACKER}\n"), lifted.stderr
    wait_for(lambda: served(a, ATTACKER), 3, "A serves the source lifted on B", interval=API_POLL)
    assert a.api("GET", "/v1/bans")[1]["bans"] == []


def test_concurrent_calls_counted_across_instances(
    sipp: Sipp, daemon_factory: DaemonFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    trunk = {"name": "capped", "whitelist": [CALLER], "limits": {"concurrent_calls": 2}}
    a, b = shared_pair(sipp, daemon_factory, redis_server, tmp_path, [trunk])
    # two calls held on A (answered, never hung up: counted until max_call_duration)
    assert invite(a, CALLER).status == 200
    assert invite(a, CALLER).status == 200
    assert a.trunk("capped")["active_calls"] == 2
    assert b.trunk("capped")["active_calls"] == 0  # B's own: none
    # once B has heard A's count (one exchange period, ~1 s): the next call on B is refused
    started = time.monotonic()
    wait_for(
        lambda: b.trunk("capped")["active_calls_elsewhere"] == 2, 5, "B hears A's calls", API_POLL
    )
    print(f"B heard A's 2 calls after {time.monotonic() - started:.2f} s")
    refused = invite(b, CALLER)
    assert (refused.status, refused.reason) == (503, "Concurrent Call Limit Reached")
    assert b.metric("sipguard_trunk_limited_total", trunk="capped", limit="concurrent_calls") == 1
    assert b.trunk("capped")["active_calls"] == 0
    assert invite(a, CALLER).status == 503  # and A itself is full
    # A stops (its calls go with it): its count expires, B admits again
    a.daemon.stop()
    wait_for(
        lambda: b.trunk("capped")["active_calls_elsewhere"] == 0, 10, "A's count expired", API_POLL
    )
    assert invite(b, CALLER).status == 200
