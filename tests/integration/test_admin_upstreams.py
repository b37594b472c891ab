"""`GET /v1/upstreams` and `sipguard admin upstreams` against the real daemon (issue 17 over
issue 14's pool): two SIPp UASes as upstreams, one of them stopped; the API shows that one down
(since when, its last probe failed, its consecutive failures) and the other up.

Must never: use a non-loopback address, sleep to synchronise (the API is polled with a deadline),
leave a process running (the daemon and SIPp are stopped by PID in the fixtures' teardown).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.harness import V4, Sipp, demo_config, free_port
from tests.integration.test_limits_admin import API_POLL, TOKEN, Stack
from tests.integration.test_upstream_pool import FAST_HEALTH
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_upstreams_show_one_down_one_up(
    sipp: Sipp, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    alive, stopped = sipp.start_uas("uas.xml", V4), sipp.start_uas("uas.xml", V4)
    port, metrics_port, admin_port = (free_port(kind, V4) for kind in ("udp", "tcp", "tcp"))
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = demo_config(
        listen=[f"udp://{V4}:{port}"],
        upstream=[
            {"uri": alive.uri, "priority": 1, "weight": 2},
            {"uri": stopped.uri, "priority": 1},
        ],
        metrics_port=metrics_port,
        extra={
            "upstream_health": FAST_HEALTH,
            "admin": {"listen": f"{V4}:{admin_port}", "token_file": str(token_file)},
            "limits": {"shutdown_grace": 1.0},
        },
    )
    stack = Stack(daemon_factory(config), port, metrics_port, admin_port)
    stack.daemon.wait_event("admin_listening", timeout=10)
    stopped.stop()

    def states() -> dict[str, dict[str, Any]] | None:
        status, body = stack.api("GET", "/v1/upstreams")
        assert status == 200, body
        by_uri = {u["uri"]: u for u in body["upstreams"]}
        if by_uri[stopped.uri]["state"] != "down" or by_uri[alive.uri]["last_probe"] is None:
            return None
        return by_uri

    # down after 3 failed probes, 1 s apart, each failing within its 1 s timeout
    upstreams = wait_for(states, 15, "the stopped upstream down in GET /v1/upstreams", API_POLL)
    down, up = upstreams[stopped.uri], upstreams[alive.uri]
    assert down["state"] == "down" and down["since"] is not None
    assert down["consecutive_failures"] >= FAST_HEALTH["down_after"]
    assert down["consecutive_successes"] == 0
    assert down["last_probe"]["outcome"] in ("timeout", "transport_error")
    assert up["state"] == "up" and up["since"] is None  # up since start
    assert up["last_probe"]["outcome"] == "answered"
    assert up["consecutive_failures"] == 0 and up["consecutive_successes"] >= 1
    assert (up["priority"], up["weight"], down["weight"]) == (1, 2, 1)
    assert stack.daemon.wait_event("upstream_down", timeout=5, upstream=stopped.uri)

    result = stack.cli("upstreams")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows[stopped.uri][3] == "down" and rows[alive.uri][3] == "up"
