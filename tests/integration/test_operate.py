"""Acceptance tests of issue 6 ("Operate it") against the real running daemon.

Owns: the operator-facing contract of `sipguard run` as README.md ("Metrics", "Log events",
"Reload", "systemd") describes it, checked from outside the process: the /metrics scrape parses
and the right series move by the right amounts under real SIPp traffic, with no IP address, user
name or Call-ID in any label; /healthz; the JSON log names each decision with the socket peer and
never carries a password, HA1, digest response or Authorization value; sd_notify READY=1,
RELOADING=1, STOPPING=1 on a socket the test binds; SIGHUP reloads atomically (a broken file
keeps the old config and is counted), keeps established calls, opens and closes listeners.
Signals at the edges of the daemon's life: a SIGHUP right after READY=1 reloads, a SIGHUP during
the shutdown drain is ignored (exit 0), a reload that fails with an unexpected error keeps the
daemon running and tells systemd READY=1 again.
Must never: use a non-loopback address, sleep to synchronise (every wait polls a condition
against a deadline), leave a process running (daemons and SIPp are stopped by PID).

RFC 3261 §10 and §22 (REGISTER, digest), §12.2 (in-dialog requests after a reload), §17.1.1.3
(the ACK of a 403 is absorbed); sd_notify(3), systemd.service(5) `Type=notify` / `notify-reload`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from sipguard import __version__
from sipguard.auth.digest import BASE_ALGORITHMS, compute_ha1
from tests.integration.conftest import DaemonFactory
from tests.integration.harness import (
    PASSWORD,
    REALM,
    REFUSED_V4,
    USER,
    V4,
    Daemon,
    HarnessError,
    Sipp,
    SippResult,
    SippServer,
    demo_config,
    free_port,
    hostport,
    port_in_use,
    received_statuses,
    send_info,
)
from tests.polling import wait_for
from tests.sipclient import SipClient, parse_message

prometheus_parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.integration

# Generous deadlines: this runs on a loaded 2-core machine next to other suites.
DEADLINE = 10.0
# A source no test ever uses: the whitelist after a reload that must shut 127.0.0.1 out.
OTHER_SOURCE = "127.0.0.9"

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --------------------------------------------------------------------------- helpers


def http_get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://{hostport(V4, port)}{path}", timeout=5) as response:
        return int(response.status), response.read().decode("utf-8")


def scrape(port: int) -> tuple[str, Series]:
    """GET /metrics and parse it with prometheus_client's own parser (it must parse)."""
    status, text = http_get(port, "/metrics")
    assert status == 200
    series: Series = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            series[sample.name, frozenset(sample.labels.items())] = float(sample.value)
    return text, series


def value(series: Series, name: str, **labels: str) -> float:
    """One sample's value; an absent series counts as 0 (children may be created on first use)."""
    return series.get((name, frozenset(labels.items())), 0.0)


def wait_metrics_endpoint(daemon: Daemon, port: int) -> None:
    daemon.wait_event("metrics_listening", timeout=DEADLINE)
    wait_for(lambda: port_in_use("tcp", V4, port), DEADLINE, "the /metrics port to be bound")


def write_config(daemon: Daemon, config: Mapping[str, Any] | str) -> None:
    """Replace the daemon's config file atomically (a reload never sees half a file)."""
    text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
    tmp = daemon.config_path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, daemon.config_path)


def count_events(daemon: Daemon, name: str) -> int:
    return sum(1 for event in daemon.logs() if event.get("event") == name)


def reload(daemon: Daemon, outcome: str) -> dict[str, Any]:
    """SIGHUP the daemon and wait for the next `outcome` event (config_reloaded or _failed)."""
    before = count_events(daemon, outcome)
    os.kill(daemon.pid, signal.SIGHUP)

    def next_event() -> dict[str, Any] | None:
        events = [e for e in daemon.logs() if e.get("event") == outcome]
        return events[before] if len(events) > before else None

    try:
        return wait_for(next_event, DEADLINE, f"{outcome} after SIGHUP")
    except TimeoutError:
        raise AssertionError(f"no {outcome} after SIGHUP:\n{daemon.describe()}") from None


def sipp_call_ids(*results: SippResult) -> set[str]:
    ids: set[str] = set()
    for result in results:
        ids |= set(re.findall(r"^Call-ID:\s*(\S+)", result.messages, re.M | re.I))
    return ids


def looks_like_ip(text: str) -> bool:
    for candidate in re.findall(r"[0-9A-Fa-f:.]{2,}", text):
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(candidate.strip("."))
            return True
    return False


def register_uri(port: int) -> str:
    return f"sip:{hostport(V4, port)}"


def config_for(sip_port: int, upstream: SippServer | None, **kw: Any) -> dict[str, Any]:
    upstream_uri = upstream.uri if upstream is not None else f"sip:{V4}:{free_port('udp')}"
    return demo_config(listen=[f"udp://{V4}:{sip_port}"], upstream=[upstream_uri], **kw)


# --------------------------------------------------------------------------- 1. metrics


def test_metrics_move_with_real_traffic(
    daemon_factory: DaemonFactory, sipp: Sipp, tmp_path: Path
) -> None:
    uas = sipp.start_uas("uas.xml")
    sip_port, metrics_port = free_port("udp"), free_port("tcp")
    daemon = daemon_factory(config_for(sip_port, uas, metrics_port=metrics_port))
    wait_metrics_endpoint(daemon, metrics_port)

    status, body = http_get(metrics_port, "/healthz")
    assert (status, body.strip()) == (200, "ok")
    _, before = scrape(metrics_port)

    remote = hostport(V4, sip_port)
    register = sipp.run("uac_register_auth.xml", remote)
    assert register.ok, register.explain() + "\n--- sipguard ---\n" + daemon.describe()
    assert received_statuses(register.messages) == [401, 200]
    refused = sipp.run("uac_forbidden.xml", remote, local_ip=REFUSED_V4)
    assert refused.ok, refused.explain() + "\n--- sipguard ---\n" + daemon.describe()
    assert received_statuses(refused.messages) == [403, 403]

    # the ACK of the 403 is the last message: wait until the core has decided about it
    def ack_counted() -> bool:
        _, now = scrape(metrics_port)
        ack = {"transport": "udp", "method": "ACK", "outcome": "ack_absorbed"}
        return value(now, "sipguard_requests_total", **ack) > 0

    wait_for(ack_counted, DEADLINE, "the 403's ACK to be counted")

    text, after = scrape(metrics_port)
    # the refusals are logged with the socket peer (SIPp's -i/-p), for fail2ban-style tools
    refused_port = int(refused.args[refused.args.index("-p") + 1])
    for method in ("REGISTER", "INVITE"):
        line = daemon.wait_event("acl_denied", timeout=DEADLINE, method=method)
        assert (line["src_ip"], line["src_port"], line["status"]) == (
            REFUSED_V4,
            refused_port,
            403,
        ), line

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "sipguard_requests_total"
    assert delta(requests, transport="udp", method="REGISTER", outcome="challenged") == 1
    assert delta(requests, transport="udp", method="REGISTER", outcome="admitted_digest") == 1
    assert delta(requests, transport="udp", method="REGISTER", outcome="acl_denied") == 1
    assert delta(requests, transport="udp", method="INVITE", outcome="acl_denied") == 1
    assert delta(requests, transport="udp", method="ACK", outcome="ack_absorbed") == 1
    assert delta("sipguard_auth_total", result="challenged") == 1
    assert delta("sipguard_auth_total", result="ok") == 1
    assert delta("sipguard_auth_total", result="failed") == 0
    assert delta("sipguard_acl_denied_total", transport="udp") == 2
    assert delta("sipguard_admitted_total", trunk="demo") == 1
    # sent by sipguard: the 401 and two 403; relayed: the upstream's 200 to the REGISTER
    assert delta("sipguard_responses_total", direction="sent", status_class="4xx") == 3
    assert delta("sipguard_responses_total", direction="relayed", status_class="2xx") == 1
    assert delta("sipguard_responses_total", direction="sent", status_class="2xx") == 0
    # every message the core decided about: 2 REGISTER + the 200 + REGISTER, INVITE, ACK refused
    assert delta("sipguard_processing_seconds_count") == 6
    assert value(after, "sipguard_build_info", version=__version__) == 1
    assert value(after, "sipguard_bugs_total") == 0

    # no label value anywhere is an IP address, the user name or a Call-ID
    call_ids = sipp_call_ids(register, refused)
    assert call_ids, "no Call-ID found in the SIPp traces"
    labels = {v for (_, label_set) in after for _, v in label_set}
    for label in labels:
        assert not looks_like_ip(label), label
        assert USER not in label, label
        assert not any(cid in label for cid in call_ids), label
    # the `upstream` label is a configured URI (issue 14): it names the upstream's address by
    # design, from the config, a bounded set; no peer's address appears anywhere else
    peers_only = "\n".join(line for line in text.splitlines() if 'upstream="' not in line)
    for secret in (USER, V4, REFUSED_V4, *call_ids):
        assert secret not in peers_only, secret
    assert USER not in text


# --------------------------------------------------------------------------- 2. logs


def _authorization_of(request: bytes) -> str:
    message = parse_message(request)
    value_ = message.header("Authorization")
    assert value_ is not None, request
    return value_


def test_logs_never_leak_secrets_and_name_each_decision(
    daemon_factory: DaemonFactory, sipp: Sipp
) -> None:
    uas = sipp.start_uas("uas.xml")
    sip_port = free_port("udp")
    config = config_for(sip_port, uas)
    config["auth"] = {**config["auth"], "algorithms": ["SHA-256", "MD5"]}
    daemon = daemon_factory(config)
    wrong = "wr0ng-" + secrets.token_hex(6)
    uri = register_uri(sip_port)

    with SipClient(V4, sip_port, "udp", timeout=DEADLINE) as bad:
        refused = bad.request_with_auth("REGISTER", uri, USER, wrong, "MD5")
        bad_auth = _authorization_of(bad.last_request)
        bad_peer, bad_call = bad.local, bad.call_id
    assert refused.status == 403, refused.raw
    with SipClient(V4, sip_port, "udp", timeout=DEADLINE) as good:
        admitted = good.request_with_auth("REGISTER", uri, USER, PASSWORD, "SHA-256")
        good_auth = _authorization_of(good.last_request)
        good_peer, good_call = good.local, good.call_id
    assert admitted.status == 200, admitted.raw

    expected = [
        ("challenged", bad_peer, bad_call, "challenged"),
        ("auth_failed", bad_peer, bad_call, "auth_failed"),
        ("challenged", good_peer, good_call, "challenged"),
        ("admitted", good_peer, good_call, "admitted_digest"),
    ]
    for event, peer, call_id, cause in expected:
        line = daemon.wait_event(event, timeout=DEADLINE, call_id=call_id)
        # the socket peer, as the client's own socket sees itself
        assert (line["src_ip"], line["src_port"]) == peer, line
        assert line["transport"] == "udp", line
        assert line["method"] == "REGISTER", line
        assert line["cause"] == cause, line

    # stop it so every line is flushed, then search everything it wrote
    assert daemon.stop(signal.SIGTERM, timeout=DEADLINE) == 0, daemon.describe()
    out = daemon.stdout_path.read_text(errors="replace") + daemon.stderr()
    forbidden = {"wrong password": wrong, "password": PASSWORD}
    for password, label in ((wrong, "wrong"), (PASSWORD, "right")):
        for algorithm in BASE_ALGORITHMS:
            forbidden[f"{label} {algorithm} HA1"] = compute_ha1(algorithm, USER, REALM, password)
    for auth, label in ((bad_auth, "wrong"), (good_auth, "right")):
        forbidden[f"{label} Authorization"] = auth
        response = re.search(r'response="([0-9a-fA-F]+)"', auth)
        assert response is not None, auth
        forbidden[f"{label} digest response"] = response.group(1)
    for what, secret in forbidden.items():
        assert secret.lower() not in out.lower(), f"the {what} appears in the daemon's output"


# --------------------------------------------------------------------------- 3. sd_notify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer
    path = str(tmp_path / "notify.sock")
    short_dir = None
    if len(path) > 100:
        short_dir = tempfile.mkdtemp(prefix="sgn")
        path = os.path.join(short_dir, "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(0.2)
        yield sock, path
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        if short_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(short_dir)


class NotifyLog:
    """Every datagram received on the notify socket, as lists of VAR=value lines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[list[str]] = []

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            self.messages.append(data.decode("utf-8", "replace").split("\n"))
            self.sock.settimeout(0)  # drain whatever else is queued without waiting

    def wait(self, assignment: str, after: int = 0) -> int:
        """Index of the first datagram at or after `after` carrying `assignment`."""

        def found() -> int | None:
            self.sock.settimeout(0.2)
            self._drain()
            for i, lines in enumerate(self.messages[after:], after):
                if assignment in lines:
                    return i + 1  # truthy even for index 0; callers subtract
            return None

        return wait_for(found, DEADLINE, f"{assignment} on NOTIFY_SOCKET") - 1


def test_ready_on_notify_socket(notify_socket: tuple[socket.socket, str], tmp_path: Path) -> None:
    sock, path = notify_socket
    sip_port = free_port("udp")
    env = {**os.environ, "NOTIFY_SOCKET": path}
    daemon = Daemon(tmp_path / "daemon", config_for(sip_port, None), env=env)
    notes = NotifyLog(sock)
    try:
        daemon.start(timeout=15)
        ready = notes.wait("READY=1")
        assert any(line.startswith("STATUS=") for line in notes.messages[ready])
        # KNOWN BUG (test_sighup_right_after_ready_reloads): the handlers are installed only
        # after READY=1, so wait until they are; the flow below is what this test is about
        wait_for(lambda: _sighup_caught(daemon.pid), DEADLINE, "the SIGHUP handler")

        os.kill(daemon.pid, signal.SIGHUP)
        reloading = notes.wait("RELOADING=1", ready + 1)
        assert any(line.startswith("MONOTONIC_USEC=") for line in notes.messages[reloading])
        reloaded = notes.wait("READY=1", reloading + 1)
        daemon.wait_event("config_reloaded", timeout=DEADLINE)

        # a refused file: RELOADING=1 and READY=1 too, so `systemctl reload` does not hang
        write_config(daemon, daemon.config_path.read_text() + "listen: [\n")
        os.kill(daemon.pid, signal.SIGHUP)
        refused = notes.wait("RELOADING=1", reloaded + 1)
        ready_again = notes.wait("READY=1", refused + 1)
        assert any("FAILED" in line for line in notes.messages[ready_again]), notes.messages
        daemon.wait_event("config_reload_failed", timeout=DEADLINE)

        os.kill(daemon.pid, signal.SIGTERM)
        notes.wait("STOPPING=1", ready_again + 1)
        # wait, do not signal again: a second signal during the drain kills it (see the report)
        assert daemon.proc.wait(DEADLINE) == 0, daemon.describe()
    finally:
        daemon.__exit__(None, None, None)


def _sighup_caught(pid: int) -> bool:
    """Whether `pid` catches SIGHUP (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


SENT = b"(signal sent)"  # marks, among the notifications seen, when the signal went out


def _signal_on_ready(
    sock: socket.socket, daemon: Daemon, signum: int, *, until: bytes | None = None
) -> tuple[threading.Thread, list[bytes]]:
    """As systemd does: send `signum` the moment READY=1 arrives on the test NOTIFY_SOCKET,
    not after reading the log; then keep reading notifications until `until` (when given).
    Returns the watcher thread and every notification line seen, with SENT where it acted."""
    seen: list[bytes] = []

    def watch() -> None:
        deadline = time.monotonic() + 20
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            seen.extend(data.split(b"\n"))
            if SENT not in seen and b"READY=1" in seen:
                os.kill(daemon.pid, signum)
                seen.append(SENT)
            if SENT in seen and (until is None or until in seen):
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher, seen


def test_sighup_right_after_ready_reloads(
    notify_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    """sd_notify(3): READY=1 means the service is up, reload included; systemd may send SIGHUP
    (Type=notify-reload, `systemctl reload`) the moment it has READY=1."""
    sock, path = notify_socket
    daemon = Daemon(
        tmp_path / "daemon",
        config_for(free_port("udp"), None),
        env={**os.environ, "NOTIFY_SOCKET": path},
    )
    watcher, seen = _signal_on_ready(sock, daemon, signal.SIGHUP)
    try:
        with contextlib.suppress(HarnessError):  # it may die before `started` is read
            daemon.start(timeout=15)
        watcher.join(25)
        assert SENT in seen, "no READY=1 on NOTIFY_SOCKET"
        wait_for(
            lambda: daemon.find_event("config_reloaded") or not daemon.alive(),
            DEADLINE,
            "a reload or an exit",
        )
        assert daemon.alive(), f"exit {daemon.proc.returncode} on a SIGHUP right after READY=1"
    finally:
        daemon.__exit__(None, None, None)


def test_sigterm_right_after_ready_exits_zero(
    notify_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    """`systemctl stop` the moment READY=1 arrives: a clean shutdown (STOPPING=1, exit 0),
    never the default action of SIGTERM (exit -15)."""
    sock, path = notify_socket
    daemon = Daemon(
        tmp_path / "daemon",
        config_for(free_port("udp"), None),
        env={**os.environ, "NOTIFY_SOCKET": path},
    )
    watcher, seen = _signal_on_ready(sock, daemon, signal.SIGTERM, until=b"STOPPING=1")
    try:
        with contextlib.suppress(HarnessError):  # it may stop before `started` is read
            daemon.start(timeout=15)
        watcher.join(25)
        assert SENT in seen, "no READY=1 on NOTIFY_SOCKET"
        code = daemon.proc.wait(DEADLINE)
        assert code == 0, daemon.describe()
        assert b"STOPPING=1" in seen, seen
        # systemd is told how long the drain may take (limits.shutdown_grace + margin)
        assert any(line.startswith(b"EXTEND_TIMEOUT_USEC=") for line in seen), seen
    finally:
        daemon.__exit__(None, None, None)


def test_sighup_during_shutdown_drain_still_exits_zero(daemon_factory: DaemonFactory) -> None:
    sip_port, tcp_port = free_port("udp"), free_port("tcp")
    config = demo_config(
        listen=[f"udp://{V4}:{sip_port}", f"tcp://{V4}:{tcp_port}"],
        upstream=[f"sip:{V4}:{free_port('udp')}"],
        extra={"limits": {"shutdown_grace": 3}},
    )
    daemon = daemon_factory(config)
    wait_for(lambda: _sighup_caught(daemon.pid), DEADLINE, "the SIGHUP handler")
    # an open TCP connection keeps the drain going (connections get CLOSE_WAIT to flush)
    with SipClient(V4, tcp_port, "tcp", timeout=DEADLINE) as client:
        assert client.request("REGISTER", register_uri(tcp_port)).status == 401
        os.kill(daemon.pid, signal.SIGTERM)
        daemon.wait_event("stopping", timeout=DEADLINE)
        os.kill(daemon.pid, signal.SIGHUP)
        code = daemon.proc.wait(DEADLINE)
    assert code == 0, daemon.describe()
    # ignored, and said so (README "Log events")
    assert daemon.find_event("signal_ignored", signal="SIGHUP"), daemon.describe()
    assert not daemon.find_event("config_reloading"), daemon.describe()
    assert daemon.logs()[-1]["event"] == "stopped", daemon.describe()  # the last line


def test_second_sigterm_hastens_the_shutdown_drain(daemon_factory: DaemonFactory) -> None:
    """SIGTERM twice (an impatient operator, Ctrl-C twice): the second one ends the drain
    at once instead of waiting `shutdown_grace`; still a clean exit 0."""
    sip_port = free_port("udp")
    config = demo_config(
        listen=[f"udp://{V4}:{sip_port}"],
        upstream=[f"sip:{V4}:{free_port('udp')}"],
        extra={"limits": {"shutdown_grace": 60}},
    )
    daemon = daemon_factory(config)
    wait_for(lambda: _sighup_caught(daemon.pid), DEADLINE, "the signal handlers")
    done = threading.Event()

    def keep_busy() -> None:
        # A message every 20 ms: the drain never sees a quiet period (0.5 s), even on a
        # loaded machine, so it would wait 60 s.
        ping = f"OPTIONS sip:{V4}:{sip_port} SIP/2.0\r\nContent-Length: 0\r\n\r\n".encode()
        end = time.monotonic() + 2 * DEADLINE
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not done.is_set() and time.monotonic() < end:
                with contextlib.suppress(OSError):
                    sock.sendto(ping, (V4, sip_port))
                done.wait(0.02)

    busy = threading.Thread(target=keep_busy, daemon=True)
    busy.start()
    try:
        # One request answered before the stop: the drain has seen traffic (a daemon that
        # never handled a message has nothing in flight and stops at once).
        with SipClient(V4, sip_port, "udp", timeout=DEADLINE) as client:
            assert client.request("REGISTER", register_uri(sip_port)).status == 401
        os.kill(daemon.pid, signal.SIGTERM)
        daemon.wait_event("stopping", timeout=DEADLINE)
        os.kill(daemon.pid, signal.SIGTERM)
        code = daemon.proc.wait(DEADLINE)
    finally:
        done.set()
        busy.join(5)
    assert code == 0, daemon.describe()
    assert daemon.find_event("stop_hastened", signal="SIGTERM"), daemon.describe()


# --------------------------------------------------------------------------- 4. dialogs


def test_reload_keeps_established_calls(daemon_factory: DaemonFactory, sipp: Sipp) -> None:
    uas = sipp.start_uas("uas.xml")
    sip_port = free_port("udp")
    config = config_for(sip_port, uas)
    daemon = daemon_factory(config)
    uac_port = free_port("udp")
    results: list[SippResult] = []
    caller = threading.Thread(
        target=lambda: results.append(
            sipp.run(
                "operate_uac_call_held_until_info.xml",
                hostport(V4, sip_port),
                local_port=uac_port,
                recv_timeout_ms=25000,
                timeout_s=30,
            )
        )
    )
    caller.start()
    try:
        uas.wait_received("ACK", timeout=DEADLINE)
        call = daemon.wait_event("admitted", timeout=DEADLINE, method="INVITE")
        call_id = call["call_id"]

        # shut 127.0.0.1 out and reload
        trunk = dict(config["trunks"][0], whitelist=[OTHER_SOURCE])
        write_config(daemon, {**config, "trunks": [trunk]})
        reload(daemon, "config_reloaded")

        # a new call from 127.0.0.1 is refused now
        with SipClient(V4, sip_port, "udp", timeout=DEADLINE) as newcomer:
            response = newcomer.request("INVITE", f"sip:service@{hostport(V4, sip_port)}")
        assert response.status == 403, response.raw

        # release the held call: its BYE goes through sipguard
        send_info(uac_port, "alice", call_id)
    finally:
        caller.join(45)
    assert not caller.is_alive()
    result = results[0]
    assert result.ok, result.explain() + "\n--- sipguard ---\n" + daemon.describe()
    assert received_statuses(result.messages)[-1] == 200
    assert uas.wait_received("BYE") == ["INVITE", "ACK", "BYE"]
    assert daemon.find_event("acl_denied", method="INVITE") is not None


# --------------------------------------------------------------------------- 5. bad reloads


def _register_through(sip_port: int) -> int:
    with SipClient(V4, sip_port, "udp", timeout=DEADLINE) as client:
        return client.request_with_auth(
            "REGISTER", register_uri(sip_port), USER, PASSWORD, "MD5"
        ).status


def test_reload_with_broken_file_keeps_old_config(
    daemon_factory: DaemonFactory, sipp: Sipp
) -> None:
    uas = sipp.start_uas("uas.xml")
    sip_port, metrics_port = free_port("udp"), free_port("tcp")
    config = config_for(sip_port, uas, metrics_port=metrics_port)
    daemon = daemon_factory(config)
    wait_metrics_endpoint(daemon, metrics_port)
    _, before = scrape(metrics_port)
    good_text = daemon.config_path.read_text()

    # a YAML syntax error
    write_config(daemon, good_text + "trunks: [ {name: broken\n")
    syntax = reload(daemon, "config_reload_failed")
    assert syntax["problems"] and all(isinstance(p, str) for p in syntax["problems"]), syntax
    assert any(daemon.config_path.name in p for p in syntax["problems"]), syntax

    # a file that parses but is wrong: a range whose end is below its start
    trunk = dict(config["trunks"][0], whitelist=[V4, "10.0.0.9-10.0.0.1"])
    write_config(daemon, {**config, "trunks": [trunk]})
    semantic = reload(daemon, "config_reload_failed")
    assert any(
        "trunks[0].whitelist[1]" in p and "10.0.0.9-10.0.0.1" in p for p in semantic["problems"]
    ), semantic

    # still serving with the old config: 127.0.0.1 is challenged, then admitted
    assert daemon.alive(), daemon.describe()
    assert _register_through(sip_port) == 200
    _, mid = scrape(metrics_port)
    reloads = "sipguard_config_reloads_total"
    assert value(mid, reloads, result="error") - value(before, reloads, result="error") == 2
    assert value(mid, reloads, result="ok") == value(before, reloads, result="ok")

    # a good file with a changed whitelist is applied
    trunk = dict(config["trunks"][0], whitelist=[OTHER_SOURCE])
    write_config(daemon, {**config, "trunks": [trunk]})
    reload(daemon, "config_reloaded")
    _, after = scrape(metrics_port)
    assert value(after, reloads, result="ok") - value(before, reloads, result="ok") == 1
    assert value(after, reloads, result="error") == value(mid, reloads, result="error")
    assert _register_through(sip_port) == 403


# --------------------------------------------------------------------------- 6. listeners


def _tcp_register_status(port: int) -> int:
    with SipClient(V4, port, "tcp", timeout=DEADLINE) as client:
        return client.request("REGISTER", register_uri(port)).status


def test_reload_opens_and_closes_listeners(daemon_factory: DaemonFactory) -> None:
    sip_port = free_port("udp")
    config = config_for(sip_port, None)
    daemon = daemon_factory(config)
    tcp_port = free_port("tcp")
    with pytest.raises(ConnectionRefusedError):
        _tcp_register_status(tcp_port)

    added = {**config, "listen": [*config["listen"], f"tcp://{V4}:{tcp_port}"]}
    write_config(daemon, added)
    event = reload(daemon, "config_reloaded")
    assert f"tcp://{V4}:{tcp_port}" in event["listeners"], event
    assert _tcp_register_status(tcp_port) == 401  # a real SIP listener: it challenges

    write_config(daemon, config)
    event = reload(daemon, "config_reloaded")
    assert f"tcp://{V4}:{tcp_port}" not in event["listeners"], event

    def refused() -> bool:
        try:
            _tcp_register_status(tcp_port)
        except ConnectionRefusedError:
            return True
        return False

    wait_for(refused, DEADLINE, "the removed TCP listener to refuse connections")
    # the UDP listener that stayed was not disturbed
    with SipClient(V4, sip_port, "udp", timeout=DEADLINE) as client:
        assert client.request("REGISTER", register_uri(sip_port)).status == 401

    # atomic: a new listener on a busy port refuses the whole file; the old one keeps serving
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((V4, 0))
        squatter.listen(1)
        busy = f"tcp://{V4}:{squatter.getsockname()[1]}"
        extra_udp = free_port("udp")
        write_config(daemon, {**config, "listen": [f"udp://{V4}:{extra_udp}", busy]})
        failed = reload(daemon, "config_reload_failed")
    assert any(busy in problem for problem in failed["problems"]), failed
    # what the refused file bound before the busy port failed is closed again
    wait_for(lambda: not port_in_use("udp", V4, extra_udp), DEADLINE, "the new UDP port closed")
    assert daemon.find_event("listener_error", listener=busy) is not None, daemon.describe()
    with SipClient(V4, sip_port, "udp", timeout=DEADLINE) as client:
        assert client.request("REGISTER", register_uri(sip_port)).status == 401
