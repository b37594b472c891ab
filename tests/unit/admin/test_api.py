"""The admin API over a real socket: token, routes, JSON errors, bounds (the test bed is in
conftest.py; the daemon as a whole is tested in tests/integration/test_admin.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from sipguard.admin import api as admin_api
from sipguard.policy.guard import UnbanEvent
from sipguard.policy.limits import DialogKey
from tests.unit.admin.conftest import NEVER_BANNED, TOKEN, Harness, make_settings


async def test_bans_listed_banned_and_lifted(admin: Harness) -> None:
    now = time.time()
    admin.core.guard.record_failure("203.0.113.9", now)
    admin.core.guard.record_failure("203.0.113.9", now)
    status, body, _ = await admin.request("GET", "/v1/bans")
    assert status == 200
    [ban] = body["bans"]
    assert ban["address"] == "203.0.113.9" and ban["failures"] == 2
    until = datetime.fromisoformat(ban["until"].replace("Z", "+00:00"))
    assert timedelta(seconds=598) < until - datetime.fromtimestamp(now, UTC) <= timedelta(600)

    status, body, _ = await admin.request("DELETE", "/v1/bans/203.0.113.9")
    assert (status, body) == (200, {"unbanned": "203.0.113.9"})
    assert not admin.core.guard.is_banned("203.0.113.9", time.time())
    assert [type(e) for e in admin.observer.events] == [UnbanEvent]
    status, body, _ = await admin.request("DELETE", "/v1/bans/203.0.113.9")
    assert status == 404 and body["error"] == "not banned"

    status, body, _ = await admin.request(
        "POST", "/v1/bans", json={"address": "::ffff:198.51.100.1", "duration": 60}
    )
    assert status == 200 and body["ban"]["address"] == "198.51.100.1"
    assert admin.core.guard.is_banned("198.51.100.1", time.time() + 59)
    assert not admin.core.guard.is_banned("198.51.100.1", time.time() + 61)
    assert ("admin_banned", "198.51.100.1") in [
        (e, f.get("address")) for e, f in admin.observer.lines
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"address": "203.0.113.300"}, "is not an IP address"),
        ({"address": "fe80::1%eth0"}, "zone id"),
        ({"address": "203.0.113.1", "duration": 0}, "duration: must be > 0"),
        ({"address": "203.0.113.1", "duration": "600"}, "give seconds as a number"),
        ({"address": "203.0.113.1", "until": 5}, "unknown key 'until'"),
        (["203.0.113.1"], "expected a JSON object"),
    ],
)
async def test_bad_ban_request_is_a_json_400(admin: Harness, body: Any, message: str) -> None:
    status, answer, _ = await admin.request("POST", "/v1/bans", json=body)
    assert status == 400
    assert message in answer["error"]
    assert admin.core.guard.bans(time.time()) == []


async def test_exempt_address_is_not_banned(admin: Harness) -> None:
    status, body, _ = await admin.request("POST", "/v1/bans", json={"address": NEVER_BANNED})
    assert status == 409 and "never_ban" in body["error"]


async def test_wrong_or_missing_token_is_401_changes_nothing_and_is_logged(
    admin: Harness,
) -> None:
    admin.core.guard.ban("203.0.113.9", time.time(), 600)
    for token in (b"x" * 32, TOKEN[:-1], TOKEN + b"t", None):
        status, body, headers = await admin.request("DELETE", "/v1/bans/203.0.113.9", token)
        assert status == 401 and body == {"error": "unauthorized"}
        assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await admin.request("POST", "/v1/reload", b"wrong" * 8)
    assert status == 401
    assert admin.core.guard.is_banned("203.0.113.9", time.time())
    assert admin.server.reloads == 0
    logged = [f for e, f in admin.observer.lines if e == "admin_unauthorized"]
    assert len(logged) == 5
    assert logged[0]["src_ip"] == "127.0.0.1" and logged[0]["src_port"] > 0
    assert [f["reason"] for f in logged[2:4]] == ["wrong token", "no token"]
    assert all(TOKEN.decode() not in repr(f) for f in logged)


async def test_basic_scheme_with_the_token_is_refused(admin: Harness) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            admin.url + "/v1/status", headers={"Authorization": "Basic " + TOKEN.decode()}
        ) as response,
    ):
        assert response.status == 401


async def test_trunks_show_limits_counters_and_no_secret(admin: Harness) -> None:
    limiter = admin.core.limiter
    limiter.admit_call("acme", DialogKey(b"c1", b"t1"), b"b1", 0.0)
    for n in range(6):
        limiter.admit_call("acme", DialogKey(b"c%d" % (n + 2), b"t"), b"b", 0.0)
    status, body, _ = await admin.request("GET", "/v1/trunks")
    assert status == 200
    acme, open_trunk = body["trunks"]
    assert acme["name"] == "acme" and acme["whitelist"] == ["203.0.113.0/24"]
    assert acme["limits"] == {
        "calls_per_second": 10,
        "concurrent_calls": 5,
        "registrations_per_second": None,
        "max_call_duration": 14400.0,
    }
    assert acme["active_calls"] == 5
    assert acme["admitted"] == {"calls": 5, "registrations": 0}
    assert acme["refused"]["concurrent_calls"] == 2
    assert acme["credentials"] == [
        {"username": "acme", "valid_until": None, "not_before": None, "valid": True},
        {
            "username": "old",
            "valid_until": "2020-01-01T00:00:00+00:00",
            "not_before": None,
            "valid": False,
        },
    ]
    assert open_trunk["credentials"] == [] and open_trunk["active_calls"] == 0
    _, raw, _ = await admin.request("GET", "/v1/trunks")
    assert "s3cret-password" not in repr(raw) and "0" * 32 not in repr(raw)


async def test_reload_answers_the_outcome_and_every_error(admin: Harness) -> None:
    status, body, _ = await admin.request("POST", "/v1/reload")
    assert status == 200 and body["outcome"] == "applied" and body["errors"] == []
    admin.server.problems = ["x.yaml: trunks[0].whitelist[0]: 'nope': not an address", "x.yaml: b"]
    status, body, _ = await admin.request("POST", "/v1/reload")
    assert status == 422
    assert body["outcome"] == "refused"
    assert body["errors"] == admin.server.problems
    assert body["running"] == {"file": "/etc/sipguard/sipguard.yaml", "sha256": "ab" * 32}


async def test_status_and_upstreams(admin: Harness) -> None:
    status, body, _ = await admin.request("GET", "/v1/status")
    assert status == 200
    assert body["workers"] == 1 and body["uptime_seconds"] >= 0
    assert body["config"]["sha256"] == "ab" * 32
    status, body, _ = await admin.request("GET", "/v1/upstreams")
    assert status == 200 and body["upstreams"][0]["uri"] == "sip:127.0.0.1:5070"


async def test_unknown_route_and_method_are_json(admin: Harness) -> None:
    status, body, _ = await admin.request("GET", "/v1/nothing")
    assert status == 404 and body == {"error": "not found"}
    status, body, _ = await admin.request("PUT", "/v1/bans")
    assert status == 405 and body == {"error": "method not allowed"}


async def test_oversized_body_is_refused(admin: Harness) -> None:
    status, body, _ = await admin.request(
        "POST", "/v1/bans", data=b"{" + b" " * admin_api.MAX_BODY_BYTES + b"}"
    )
    assert status == 413 and "error" in body
    assert admin.core.guard.bans(time.time()) == []


async def test_request_rate_is_bounded(admin: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_api, "RATE", 0.001)
    statuses = []
    for _ in range(int(admin_api.BURST) + 5):
        status, _, headers = await admin.request("GET", "/v1/status")
        statuses.append(status)
    assert statuses.count(200) == int(admin_api.BURST)
    assert statuses[-1] == 429 and headers["Retry-After"] == "1"


async def test_connections_are_bounded(admin: Harness) -> None:
    host, port = admin.listener.address
    idle = [await asyncio.open_connection(host, port) for _ in range(admin_api.MAX_CONNECTIONS)]
    try:
        reader, writer = await asyncio.open_connection(host, port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # refused at once
        writer.close()
    finally:
        for _, w in idle:
            w.close()


async def test_admin_off_in_running_config_answers_503(admin: Harness) -> None:
    admin.server.settings = make_settings(None)
    status, body, _ = await admin.request("GET", "/v1/status")
    assert status == 503 and "off" in body["error"]
