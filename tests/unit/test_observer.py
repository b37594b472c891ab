"""Observer: each Cause becomes the documented event at its level with the socket peer as
src_ip/src_port, the metrics move, systemd hears READY/RELOADING/STOPPING, secrets stay out, and
a flood of one event is bounded in lines but not in counts."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import socket
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipguard.events import EVENTS
from sipguard.logs import REDACTED, configure_logging
from sipguard.metrics import Metrics
from sipguard.notify import STOP_MARGIN, Notifier
from sipguard.observer import Observer, build_observer
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Address, BanEvent, Cause, Drop, Forward, Info, Reply, Transport
from sipguard.settings import (
    AuthSettings,
    Limits,
    Listener,
    LogSettings,
    MetricsSettings,
    Settings,
    Trunk,
    Upstream,
)
from tests.polling import wait_for_async

PEER = Address(Transport.UDP, "203.0.113.7", 5080)
UPSTREAM = Address(Transport.UDP, "127.0.0.1", 5070)


class RecordingNotifier(Notifier):
    """Keeps what would have been sent to systemd."""

    def __init__(self) -> None:
        super().__init__("/nonexistent")
        self.sent: list[tuple[str, ...]] = []

    def send(self, *assignments: str) -> bool:
        self.sent.append(assignments)
        return True


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, level: str = "info", **kw: Any) -> None:
        self.out = io.BytesIO()
        self.metrics = Metrics(trunks=["acme"])
        self.notifier = RecordingNotifier()
        self.clock = Clock()
        self.mono = Clock(0.0)
        self.observer = Observer(
            self.metrics,
            configure_logging(level, "json", self.out),
            self.notifier,
            clock=self.clock,
            monotonic=self.mono,
            **kw,
        )

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.getvalue().splitlines()]

    def metric(self, name: str, **labels: str) -> float:
        text = self.metrics.scrape().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0


def challenge(status: int = 407, call_id: str = "a84b4c76e66710@pc33") -> Reply:
    data = f"SIP/2.0 {status} Proxy Authentication Required\r\n\r\n".encode()
    return Reply(data, PEER, None, None, Cause.CHALLENGED, Info(method="INVITE", call_id=call_id))


def test_every_cause_has_a_snake_case_event() -> None:
    assert set(EVENTS) == set(Cause)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", name) for name, _ in EVENTS.values())


def test_admitted_line_and_metrics() -> None:
    rig = Rig()
    info = Info(method="INVITE", call_id="c1@x", trunk="acme", user="alice", status=0)
    action = Forward(
        b"INVITE sip:bot SIP/2.0\r\n\r\n", UPSTREAM, None, None, Cause.ADMITTED_DIGEST, info
    )
    rig.observer.decision(action, PEER, 3e-5)
    (line,) = rig.lines()
    assert line["event"] == "admitted" and line["level"] == "info"
    assert (line["src_ip"], line["src_port"], line["transport"]) == ("203.0.113.7", 5080, "udp")
    assert (line["method"], line["call_id"], line["trunk"], line["user"]) == (
        "INVITE",
        "c1@x",
        "acme",
        "alice",
    )
    assert line["cause"] == "admitted_digest" and line["action"] == "forward"
    assert (line["dst_ip"], line["dst_port"]) == ("127.0.0.1", 5070)
    assert rig.metric("sipguard_admitted_total", trunk="acme") == 1
    assert rig.metric("sipguard_auth_total", result="ok") == 1


@pytest.mark.parametrize(
    ("cause", "event", "level"),
    [
        (Cause.CHALLENGED, "challenged", "info"),
        (Cause.STALE_NONCE, "challenged", "info"),
        (Cause.AUTH_FAILED, "auth_failed", "warning"),
        (Cause.ACL_DENIED, "acl_denied", "warning"),
        (Cause.PARSE_ERROR, "parse_error", "info"),
        (Cause.TOO_MANY_HOPS, "too_many_hops", "info"),
        (Cause.LOOP_DETECTED, "loop_detected", "warning"),
        (Cause.RATE_LIMITED, "rate_limited", "warning"),
        (Cause.SCANNER, "scanner_dropped", "warning"),
        (Cause.UPSTREAM_ERROR, "upstream_unavailable", "warning"),
    ],
)
def test_refusals_are_logged_with_status(cause: Cause, event: str, level: str) -> None:
    rig = Rig()
    data = b"SIP/2.0 403 Forbidden\r\n\r\n"
    info = Info(method="REGISTER", status=403)  # the core sets the status of every reply
    rig.observer.decision(Reply(data, PEER, None, None, cause, info), PEER, 1e-5)
    (line,) = rig.lines()
    assert (line["event"], line["level"], line["cause"]) == (event, level, cause.value)
    assert line["status"] == 403  # from the value: the shell never reads the bytes
    assert line["action"] == "reply"


@pytest.mark.parametrize(
    "cause",
    [
        Cause.RESPONSE,
        Cause.IN_DIALOG,
        Cause.KEEPALIVE,
        Cause.OPTIONS_ANSWERED,
        Cause.FROM_UPSTREAM,
        Cause.STRAY,
        Cause.BANNED,
        Cause.ACK_ABSORBED,
    ],
)
def test_per_packet_causes_are_debug_only(cause: Cause) -> None:
    rig = Rig("info")
    action = Forward(b"SIP/2.0 180 Ringing\r\n\r\n", PEER, None, None, cause, Info(status=180))
    rig.observer.decision(action, UPSTREAM, 1e-5)
    assert rig.lines() == []
    debug = Rig("debug")
    debug.observer.decision(action, UPSTREAM, 1e-5)
    assert [line["level"] for line in debug.lines()] == ["debug"]


def test_reply_accompanying_a_forward_is_not_a_second_line() -> None:
    rig = Rig()
    info = Info(method="CANCEL", call_id="c2")
    rig.observer.decision(
        Reply(b"SIP/2.0 200 OK\r\n\r\n", PEER, None, None, Cause.CANCEL_FORWARDED, info), PEER, 1e-5
    )
    rig.observer.decision(
        Forward(
            b"CANCEL sip:x SIP/2.0\r\n\r\n", UPSTREAM, None, None, Cause.CANCEL_FORWARDED, info
        ),
        PEER,
        1e-5,
    )
    assert [line["event"] for line in rig.lines()] == ["cancel_forwarded"]
    assert (
        rig.metric(
            "sipguard_requests_total", transport="udp", method="CANCEL", outcome="cancel_forwarded"
        )
        == 1
    )


def test_src_is_the_socket_peer_not_a_header() -> None:
    rig = Rig()
    spoofed = Info(method="INVITE", detail="Via: SIP/2.0/UDP 10.0.0.1;received=10.0.0.1")
    peer = Address(Transport.TCP, "::ffff:198.51.100.9", 40123)
    rig.observer.decision(Drop(Cause.ACL_DENIED, spoofed, close=True), peer, 1e-5)
    (line,) = rig.lines()
    assert line["src_ip"] == "198.51.100.9"  # IPv4-mapped written as IPv4, as the firewall sees it
    assert line["src_port"] == 40123
    assert line["closed"] is True and "status" not in line


def test_ipv4_mapped_peer_is_logged_as_ipv4() -> None:
    rig = Rig()
    rig.observer.decision(challenge(), Address(Transport.UDP, "::ffff:192.0.2.1", 5080), 1e-5)
    rig.observer.decision(challenge(), Address(Transport.UDP, "2001:db8::1", 5080), 1e-5)
    assert [line["src_ip"] for line in rig.lines()] == ["192.0.2.1", "2001:db8::1"]


def test_secrets_in_info_never_reach_the_log() -> None:
    rig = Rig()
    detail = (
        'Proxy-Authorization: Digest username="alice", realm="sipguard.test", nonce="n",'
        ' uri="sip:bot@x", response="0e1f9d1a8c2b4e6f8a0b1c2d3e4f5a6b"; password=hunter2'
    )
    info = Info(method="INVITE", call_id="c3", user="alice", detail=detail)
    rig.observer.decision(
        Reply(b"SIP/2.0 403 F\r\n\r\n", PEER, None, None, Cause.AUTH_FAILED, info), PEER, 1e-5
    )
    text = rig.out.getvalue()
    assert b"0e1f9d1a" not in text and b"hunter2" not in text
    (line,) = rig.lines()
    assert f"response={REDACTED}" in line["detail"]
    assert line["user"] == "alice"


def test_crlf_call_id_cannot_forge_a_line() -> None:
    rig = Rig()
    forged = 'x\r\n{"event":"admitted","src_ip":"6.6.6.6","level":"info"}'
    rig.observer.decision(challenge(call_id=forged), PEER, 1e-5)
    lines = rig.lines()
    assert len(lines) == 1
    assert lines[0]["src_ip"] == "203.0.113.7" and lines[0]["event"] == "challenged"


def test_flood_is_bounded_in_lines_not_in_counts() -> None:
    rig = Rig(log_rate=1.0, log_burst=2.0)
    for _ in range(10):
        rig.observer.decision(challenge(), PEER, 1e-5)
    assert len(rig.lines()) == 2
    rig.mono.now += 1.0  # one token back
    rig.observer.decision(challenge(), PEER, 1e-5)
    lines = rig.lines()
    assert len(lines) == 3 and lines[-1]["suppressed"] == 8
    assert rig.metric("sipguard_auth_total", result="challenged") == 11
    assert rig.metric("sipguard_log_suppressed_total", event="challenged") == 8


def test_unlimited_logging() -> None:
    rig = Rig(log_rate=None)
    for _ in range(50):
        rig.observer.decision(challenge(), PEER, 1e-5)
    assert len(rig.lines()) == 50


def test_bans() -> None:
    rig = Rig()
    rig.observer.banned(BanEvent("203.0.113.66", rig.clock.now + 600, failures=5))
    rig.observer.banned(BanEvent("203.0.113.67", rig.clock.now + 60, failures=5))
    assert rig.metric("sipguard_bans_active") == 2
    assert rig.metric("sipguard_bans_total") == 2
    rig.observer.banned(BanEvent("203.0.113.66", 0))
    assert rig.metric("sipguard_bans_active") == 1
    rig.clock.now += 61  # the other ban expired
    assert rig.metric("sipguard_bans_active") == 0
    banned, _, unbanned = rig.lines()
    assert banned["event"] == "banned" and banned["level"] == "warning"
    assert (banned["src_ip"], banned["failures"], banned["ban_seconds"]) == ("203.0.113.66", 5, 600)
    assert unbanned["event"] == "unbanned"
    assert "203.0.113" not in rig.metrics.scrape().decode()


class UnbanReason(Enum):
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class UnbanEvent:
    """The shape of sipguard.policy.guard.UnbanEvent: `until` is when the ban was due to end."""

    ip: str
    until: float
    reason: UnbanReason


def test_unban_event_with_reason() -> None:
    rig = Rig()
    rig.observer.banned(BanEvent("203.0.113.66", rig.clock.now + 600, failures=5))
    rig.observer.banned(UnbanEvent("203.0.113.66", rig.clock.now + 600, UnbanReason.EXPIRED))
    assert rig.metric("sipguard_bans_active") == 0
    assert rig.metric("sipguard_bans_total") == 1
    _, unbanned = rig.lines()
    assert (unbanned["event"], unbanned["reason"]) == ("unbanned", "expired")


def test_dropped_response_is_debug() -> None:
    rig = Rig()
    rig.observer.decision(
        Drop(Cause.CANCEL_FORWARDED, Info(method="CANCEL", status=200)), UPSTREAM, 1e-5
    )
    assert rig.lines() == []
    debug = Rig("debug")
    debug.observer.decision(
        Drop(Cause.CANCEL_FORWARDED, Info(method="CANCEL", status=200)), UPSTREAM, 1e-5
    )
    (line,) = debug.lines()
    assert (line["event"], line["cause"], line["status"]) == (
        "response_dropped",
        "cancel_forwarded",
        200,
    )


def test_tracked_bans_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import sipguard.reports as reports_module

    monkeypatch.setattr(reports_module, "MAX_TRACKED_BANS", 3)
    rig = Rig()
    for i in range(10):
        rig.observer.banned(BanEvent(f"192.0.2.{i}", rig.clock.now + 600))
    assert rig.metric("sipguard_bans_active") <= 3


def test_lifecycle_notifies_systemd() -> None:
    rig = Rig()
    rig.observer.started(["udp://127.0.0.1:5060", "tls://[::1]:5061"])
    rig.observer.reloading()
    settings = Settings(
        source="/etc/sipguard/sipguard.yaml",
        listen=(Listener("udp", "127.0.0.1", 5060),),
        tls=None,
        upstream=(Upstream("sip:127.0.0.1:5070", "udp", "127.0.0.1", 5070),),
        auth=AuthSettings(realm="sipguard.test"),
        trunks=(Trunk("acme"), Trunk("initech", whitelist=parse_rules(("192.0.2.0/24",)))),
    )
    rig.observer.config_reloaded(settings)
    rig.observer.reloading()
    rig.observer.config_reload_failed(["sipguard.yaml: trunks[0].name: must be a string"])
    rig.observer.listener_error("udp://127.0.0.1:5060", "socket closed")
    rig.observer.stopping()
    kinds = [sent[0] for sent in rig.notifier.sent]
    assert kinds == [
        "READY=1",
        "RELOADING=1",
        "READY=1",
        "RELOADING=1",
        "READY=1",
        "STATUS=listener udp://127.0.0.1:5060 failed: socket closed",
        "STOPPING=1",
    ]
    assert rig.notifier.sent[1][1].startswith("MONOTONIC_USEC=")
    events = [(line["event"], line["level"]) for line in rig.lines()]
    assert events == [
        ("started", "info"),
        ("config_reloading", "info"),
        ("config_reloaded", "info"),
        ("config_reloading", "info"),
        ("config_reload_failed", "error"),
        ("listener_error", "error"),
        ("stopping", "info"),
    ]
    started, _, reloaded, _, failed, *_ = rig.lines()
    assert started["listeners"] == ["udp://127.0.0.1:5060", "tls://[::1]:5061"]
    assert reloaded["trunks"] == 2
    assert failed["problems"] == ["sipguard.yaml: trunks[0].name: must be a string"]
    assert rig.metric("sipguard_config_reloads_total", result="ok") == 1
    assert rig.metric("sipguard_config_reloads_total", result="error") == 1
    assert rig.metric("sipguard_admitted_total", trunk="initech") == 0
    assert "initech" in rig.metrics.scrape().decode()


def test_bug_and_upstream_error() -> None:
    rig = Rig()
    secret = "".join(["s3", "cret"])

    def core(password: str) -> None:
        raise KeyError("via")

    try:
        core(secret)
    except KeyError as exc:
        rig.observer.bug(exc, PEER)
    rig.observer.upstream_error(UPSTREAM, "connection refused")
    bug, upstream = rig.lines()
    assert (bug["event"], bug["level"], bug["exc_type"]) == ("bug", "error", "KeyError")
    assert bug["src_ip"] == "203.0.113.7" and "KeyError" in bug["exception"]
    assert secret not in rig.out.getvalue().decode()
    assert upstream["event"] == "upstream_error" and upstream["upstream_port"] == 5070
    assert rig.metric("sipguard_bugs_total") == 1
    assert rig.metric("sipguard_upstream_errors_total") == 1


def test_connections_gauge() -> None:
    rig = Rig()
    rig.observer.connection_opened("tcp")
    rig.observer.connection_opened("tls")
    rig.observer.connection_closed("tcp")
    assert rig.metric("sipguard_connections", transport="tcp") == 0
    assert rig.metric("sipguard_connections", transport="tls") == 1


def test_everything_optional(capsys: pytest.CaptureFixture[str]) -> None:
    """No metrics, logger nor notifier (a tool, a test): every report is taken, nothing is
    written anywhere, no endpoint is opened, and the ban bookkeeping still holds."""
    clock = Clock()
    observer = Observer(None, None, None, clock=clock)
    observer.decision(challenge(), PEER, 1e-5)
    observer.started(["udp://127.0.0.1:5060"])
    observer.reloading()
    observer.config_reloaded(make_settings("info"))
    observer.config_reload_failed(["x"])
    observer.banned(BanEvent("192.0.2.1", clock.now + 600))
    observer.banned(BanEvent("192.0.2.2", clock.now + 600))
    assert observer.active_bans() == 2.0
    observer.banned(BanEvent("192.0.2.1", 0))  # that ban ended
    assert observer.active_bans() == 1.0
    clock.now += 601
    assert observer.active_bans() == 0.0
    observer.bug(RuntimeError("x"), PEER)
    observer.upstream_error(UPSTREAM, "x")
    observer.connection_opened("udp")
    observer.connection_closed("udp")
    observer.listener_error("udp://127.0.0.1:5060", "x")
    observer.stopping()
    assert observer.metrics is None and observer.logger is None and observer.endpoint is None
    assert capsys.readouterr() == ("", "")


def test_set_logger_switches_output() -> None:
    rig = Rig()
    other = io.BytesIO()
    rig.observer.set_logger(configure_logging("info", "json", other))
    rig.observer.decision(challenge(), PEER, 1e-5)
    assert rig.out.getvalue() == b""
    assert orjson.loads(other.getvalue())["event"] == "challenged"


def make_settings(level: str = "info", with_metrics: bool = True) -> Settings:
    return Settings(
        source="sipguard.yaml",
        listen=(Listener("udp", "127.0.0.1", 5060),),
        tls=None,
        upstream=(Upstream("sip:127.0.0.1:5070", "udp", "127.0.0.1", 5070),),
        auth=AuthSettings(realm="sipguard.test"),
        trunks=(Trunk("acme"),),
        metrics=MetricsSettings("127.0.0.1", 9460) if with_metrics else None,
        log=LogSettings(level=level, format="json"),
    )


def test_config_reloaded_says_what_changed() -> None:
    first = make_settings("info")
    rig = Rig(settings=first)
    carrier = Trunk("carrier", whitelist=parse_rules(("192.0.2.0/24", "198.51.100.7")))
    second = dataclasses.replace(first, trunks=(*first.trunks, carrier))
    rig.observer.config_reloaded(second)
    acme = Trunk("acme", whitelist=parse_rules(("203.0.113.0/24",)))
    third = dataclasses.replace(second, trunks=(acme, carrier))
    rig.observer.config_reloaded(third)
    rig.observer.config_reloaded(third)  # saved again, nothing edited
    added, edited, same = rig.lines()
    assert added["trunks_added"] == ["carrier"] and "trunks_changed" not in added
    assert (added["trunks"], added["rules"], added["rules_before"]) == (2, 2, 0)
    assert edited["trunks_changed"] == ["acme"] and "trunks_added" not in edited
    assert (edited["rules"], edited["rules_before"]) == (3, 2)
    assert "unchanged" not in added and "unchanged" not in edited
    assert same["unchanged"] is True and "rules_before" not in same
    assert (same["trunks"], same["rules"], same["users"]) == (2, 3, 0)
    assert same["listeners"] == [listener.url for listener in first.listen]


def test_stopping_asks_systemd_for_the_grace_it_runs_with() -> None:
    """TimeoutStopSec= in the unit must not cut `limits.shutdown_grace` short."""
    first = make_settings("info")
    rig = Rig(settings=first)
    rig.observer.config_reloaded(dataclasses.replace(first, limits=Limits(shutdown_grace=40.0)))
    rig.observer.stopping()
    assert rig.notifier.sent[-1] == (
        "STOPPING=1",
        f"EXTEND_TIMEOUT_USEC={round((40.0 + STOP_MARGIN) * 1e6)}",
        "STATUS=stopping",
    )
    assert rig.lines()[-1]["grace"] == 40.0


def test_config_reloaded_without_a_previous_config_gives_counts() -> None:
    rig = Rig()
    rig.observer.config_reloaded(make_settings("info"))
    (line,) = rig.lines()
    assert (line["trunks"], line["rules"], line["users"]) == (1, 0, 0)
    assert line["listeners"] == [listener.url for listener in make_settings("info").listen]
    assert "unchanged" not in line and "trunks_added" not in line


def test_build_observer_and_log_level_follows_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    out = io.BytesIO()
    observer = build_observer(make_settings("warning"), stream=out)
    assert observer.metrics is not None and observer.notifier is None
    assert "acme" in observer.metrics.scrape().decode()
    observer.decision(challenge(), PEER, 1e-5)  # info: below warning
    assert out.getvalue() == b""
    observer.config_reloaded(make_settings("info"))
    observer.decision(challenge(), PEER, 1e-5)
    events = [orjson.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["config_reloaded", "challenged"]
    assert build_observer(make_settings(with_metrics=False), stream=out).metrics is None


async def fetch(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_endpoint(port: int) -> Settings:
    settings = make_settings()
    return Settings(
        settings.source,
        settings.listen,
        settings.tls,
        settings.upstream,
        settings.auth,
        settings.trunks,
        MetricsSettings("127.0.0.1", port),
        settings.log,
    )


async def test_endpoint_follows_start_reload_and_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    out = io.BytesIO()
    first, second = free_port(), free_port()
    observer = build_observer(with_endpoint(first), stream=out)
    observer.started(["udp://127.0.0.1:5060"])
    await wait_for_async(lambda: observer.endpoint is not None, 5, "the endpoint")
    assert (await fetch(first, "/healthz")).endswith(b"ok\n")
    assert b"sipguard_build_info" in await fetch(first, "/metrics")
    observer.config_reloaded(with_endpoint(second))  # metrics.listen moved
    await wait_for_async(lambda: observer.endpoint is not None, 5, "the endpoint")
    assert (await fetch(second, "/healthz")).endswith(b"ok\n")
    with pytest.raises(OSError):
        await fetch(first, "/healthz")
    observer.stopping()
    assert observer.endpoint is None
    events = [orjson.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events.count("metrics_listening") == 2


async def test_endpoint_port_in_use_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    out = io.BytesIO()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        observer = build_observer(with_endpoint(port), stream=out)
        observer.started(["udp://127.0.0.1:5060"])

        def reported() -> bool:
            return b"listener_error" in out.getvalue()

        await wait_for_async(reported, 5, "the listener_error line")
    assert observer.endpoint is None
    observer.stopping()


def test_readme_event_table_names_every_event() -> None:
    """README "Log events" is the stable interface: every event the daemon writes is in it."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    table = readme.split("\n## Log events\n")[1].split("\n## ")[0]
    named = set(re.findall(r"`([a-z_]+)`", table))
    emitted = {name for name, _ in EVENTS.values()} | {"response_dropped"}
    server = sorted((root / "sipguard/server").glob("*.py"))
    for module in [root / "sipguard/observer.py", root / "sipguard/reports.py", *server]:
        source = module.read_text()
        emitted |= set(re.findall(r'_log\(\s*[A-Z]+,\s*"([a-z_]+)"', source))
        emitted |= set(re.findall(r'\bnote\([^,]+,\s*"[a-z]+",\s*"([a-z_]+)"', source))
    assert {"metrics_listening", "stopped", "upstream_error", "banned"} <= emitted
    assert sorted(emitted - named) == []


def test_upstream_report_logs_and_metrics() -> None:
    from sipguard.proxy.pool import Health, HealthChange, Member
    from sipguard.proxy.upstream_report import FailoverEvent, Outcome, UpstreamReport

    rig = Rig()
    one = "sip:127.0.0.1:5070;transport=udp"
    two = "sip:127.0.0.1:5080;transport=udp"
    rig.metrics.set_upstreams([one, two])
    member = Member(one, UPSTREAM)
    report = UpstreamReport(
        events=[
            HealthChange(member, Health.DOWN, "timeout"),
            FailoverEvent("c1@x", "INVITE", one, two, "503"),
            HealthChange(member, Health.UP, "answered"),
        ],
        counts={(one, Outcome.FAILED_OVER): 1, (two, Outcome.FORWARDED): 2},
        health=[(one, True), (two, False)],
        lost=0,
    )
    rig.observer.upstream_report(report)
    down, failover, up = rig.lines()
    assert (down["event"], down["level"], down["upstream"], down["reason"]) == (
        "upstream_down", "error", one, "timeout")  # fmt: skip
    assert (up["event"], up["reason"]) == ("upstream_up", "answered")
    assert (failover["event"], failover["call_id"], failover["reason"]) == (
        "failover",
        "c1@x",
        "503",
    )
    assert (failover["upstream"], failover["next_upstream"]) == (one, two)
    assert rig.metric("sipguard_upstream_up", upstream=one) == 1
    assert rig.metric("sipguard_upstream_up", upstream=two) == 0
    total = "sipguard_upstream_requests_total"
    assert rig.metric(total, upstream=one, outcome="failed_over") == 1
    assert rig.metric(total, upstream=two, outcome="forwarded") == 2
    assert rig.metric(total, upstream=two, outcome="timeout") == 0
    assert any(  # pre-created: a dashboard sees zeros from the first scrape
        "timeout" in line and two in line
        for line in rig.metrics.scrape().decode().splitlines()
        if line.startswith(total)
    )
