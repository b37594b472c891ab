"""`GET /v1/upstreams` (issue 17 over issue 14's pool): the view of each upstream, from a real
`Upstreams` pool driven into a known state by probe answers and a failover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sipguard.admin.views import timestamp, upstream_view
from sipguard.proxy.actions import Cause, Forward
from sipguard.sip import Request, Response, build_response, parse_message
from tests.unit.admin.conftest import Harness
from tests.unit.admin.test_client import config_for, run
from tests.unit.proxy.playbook import NOW
from tests.unit.proxy.test_failover import U1, U2, Rig, _response


def _answer_probes(rig: Rig, now: float, status_for: dict[Any, int]) -> None:
    """Send the probes that are due at `now` and answer each with its upstream's status."""
    probes = [a for a in rig.ups.tick(now) if isinstance(a, Forward) and a.cause is Cause.PROBE]
    assert {p.to for p in probes} == set(status_for)
    for probe in probes:
        msg = parse_message(probe.data)
        assert isinstance(msg, Request)
        response = parse_message(build_response(msg, status_for[probe.to], b"X", to_tag=b"t"))
        assert isinstance(response, Response)
        rig.ups.on_response(response, probe.to, now + 0.1)


def _known_state() -> Rig:
    """U1 answers 503 to three probes (down at the second, hysteresis 2), U2 answers 200; one
    INVITE went to the first candidate and failed over on its 503 before U1 went down."""
    rig = Rig(probe_interval=1.0, probe_timeout=0.5, down_after=2, up_after=2)
    branch = rig.start()
    first = rig.ups.current("k1")
    assert first is not None
    rig.ups.on_response(_response(branch, 503), first.to, NOW + 0.05)
    for step in range(3):
        _answer_probes(rig, NOW + step * 1.0, {U1: 503, U2: 200})
    rig.ups.report()  # the observer's drain must not empty the admin view's counts
    return rig


def test_view_shows_state_since_last_probe_streaks_and_counts() -> None:
    rig = _known_state()
    views = {v["port"]: v for v in (upstream_view(s) for s in rig.ups.status())}
    down, up = views[U1.port], views[U2.port]
    assert down["uri"] == "sip:127.0.0.1:5070" and down["transport"] == "udp"
    assert (down["priority"], down["weight"]) == (1, 1)
    assert down["state"] == "down"
    assert down["since"] == timestamp(NOW + 1.0 + 0.1)  # the second failed probe's answer
    assert down["last_probe"] == {"at": timestamp(NOW + 2.1), "outcome": "unavailable"}
    assert (down["consecutive_failures"], down["consecutive_successes"]) == (3, 0)
    assert up["state"] == "up" and up["since"] is None  # up since start
    assert up["last_probe"] == {"at": timestamp(NOW + 2.1), "outcome": "answered"}
    assert (up["consecutive_failures"], up["consecutive_successes"]) == (0, 3)
    first_to = 5070 if rig.resent[0][1] == U2 else 5080  # the one that answered the INVITE 503
    other = 5080 if first_to == 5070 else 5070
    assert (views[first_to]["forwarded"], views[first_to]["failed_over"]) == (1, 1)
    assert (views[other]["forwarded"], views[other]["failed_over"]) == (1, 0)
    assert views[first_to]["timeouts"] == views[other]["timeouts"] == 0


def test_down_upstream_comes_back_and_since_moves() -> None:
    rig = _known_state()
    _answer_probes(rig, NOW + 3.0, {U1: 200, U2: 200})
    [one] = [s for s in rig.ups.status() if s.health.member.address == U1]
    assert upstream_view(one)["state"] == "down"  # one good probe is not enough (up_after 2)
    assert upstream_view(one)["consecutive_successes"] == 1
    _answer_probes(rig, NOW + 4.0, {U1: 200, U2: 200})
    [one] = [s for s in rig.ups.status() if s.health.member.address == U1]
    view = upstream_view(one)
    assert view["state"] == "up" and view["since"] == timestamp(NOW + 4.1)
    assert (view["consecutive_failures"], view["consecutive_successes"]) == (0, 2)


async def test_get_upstreams_answers_the_pool_state(admin: Harness) -> None:
    for step in range(2):
        _answer_probes(admin.core.pool, NOW + step, {U1: 503, U2: 200})
    status, body, _ = await admin.request("GET", "/v1/upstreams")
    assert status == 200
    states = {u["uri"]: u["state"] for u in body["upstreams"]}
    assert states == {"sip:127.0.0.1:5070": "down", "sip:127.0.0.1:5080": "up"}


async def test_cli_upstreams_prints_one_line_per_upstream(
    admin: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for step in range(2):
        _answer_probes(admin.core.pool, NOW + step, {U1: 503, U2: 200})
    config = config_for(tmp_path, admin.listener.address[1])
    assert await run("admin", "-c", config, "upstreams") == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["URI", "PRI", "W", "STATE", "SINCE"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows["sip:127.0.0.1:5070"][3] == "down"
    assert rows["sip:127.0.0.1:5070"][-5:] == ["2", "0", "0", "0", "0"]  # 2 failures in a row
    assert rows["sip:127.0.0.1:5080"][3:5] == ["up", "start"]
    assert await run("admin", "-c", config, "--json", "upstreams") == 0
    assert '"consecutive_failures": 2' in capsys.readouterr().out
