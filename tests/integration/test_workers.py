"""Acceptance tests of `workers: 2` (issue 15): real daemon, real SIPp on both sides.

Owns: the contract of the supervisor (`sipguard.supervisor`) as seen from outside: both workers
serve one port (SIPp with a source port per call reaches both), responses and the upstream's
in-dialog BYE come back to the worker that sent the INVITE (each worker's own upstream-facing
socket, in its Via and Record-Route); a worker killed with SIGKILL under load is restarted
while calls keep flowing; SIGHUP validates once and reloads both (a whitelist change applies
to every worker; a bad file reaches none); one /metrics sums both; SIGTERM exits 0.

Must never: use a non-loopback address, sleep to synchronise, leave a process running.
RFC 3261 §16.6 step 8 (Via), §16.6 step 4 (Record-Route), §12.2 (in-dialog requests).
"""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import (
    V4,
    Daemon,
    Sipp,
    SippResult,
    SippServer,
    demo_config,
    free_port,
    hostport,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration

# SIPp with `-t un` (a UDP socket, so a source port, per call: the kernel spreads the calls
# over the workers by source port) refuses to start unless its socket cap fits the fd limit.
PER_CALL = ("-max_socket", "1000")

START_TIMEOUT = 60.0  # seconds: three interpreters start on a shared, loaded machine
# The top Via of a request the upstream received: the worker's own upstream-facing socket.
_TOP_VIA = re.compile(
    r"message received[^\n]*\n\s*\n(?:INVITE|BYE|ACK) [^\n]*\n(?:(?!Via:)[^\n]*\n)*?"
    r"Via: SIP/2\.0/UDP [^\s:;]+:(\d+)"
)


class Host:
    """sipguard with `workers: 2` in front of one SIPp UAS, with /metrics."""

    def __init__(self, workdir: Path, sipp: Sipp, uas_scenario: str) -> None:
        self.uas: SippServer = sipp.start_uas(uas_scenario, V4)
        self.port = free_port("both", V4)
        self.metrics_port = free_port("tcp", V4)
        self.config = demo_config(
            listen=[f"udp://{V4}:{self.port}", f"tcp://{V4}:{self.port}"],
            upstream=[f"sip:{hostport(V4, self.uas.port)};transport=udp"],
            whitelist=[V4],
            metrics_port=self.metrics_port,
            extra={"workers": 2, "limits": {"shutdown_grace": 2.0}},
        )
        self.daemon = Daemon(workdir, self.config)

    @property
    def remote(self) -> str:
        return hostport(V4, self.port)

    def start(self) -> list[int]:
        """Start; the worker pids once the supervisor said every worker is ready."""
        self.daemon.start(timeout=START_TIMEOUT)
        event = self.daemon.wait_event("started", START_TIMEOUT, supervisor=True)
        pids = event["pids"]
        assert len(pids) == 2 and self.daemon.pid not in pids
        return [int(pid) for pid in pids]

    def rewrite(self, **changes: Any) -> None:
        self.daemon.config_path.write_text(yaml.safe_dump({**self.config, **changes}))

    def scrape(self) -> str:
        url = f"http://{V4}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return str(answer.read().decode())


@pytest.fixture
def host_factory(tmp_path: Path, sipp: Sipp) -> Iterator[Any]:
    hosts: list[Host] = []

    def make(uas_scenario: str = "uas.xml") -> Host:
        host = Host(tmp_path / f"host-{len(hosts)}", sipp, uas_scenario)
        hosts.append(host)
        return host

    try:
        yield make
    finally:
        for host in hosts:
            host.daemon.__exit__(None, None, None)


def _explain(result: SippResult, host: Host) -> str:
    return result.explain() + "\n--- sipguard ---\n" + host.daemon.describe()


def _via_ports(messages: str) -> set[int]:
    return {int(port) for port in _TOP_VIA.findall(messages)}


def _ready(host: Host, pid: int) -> bool:
    return host.daemon.find_event("started", pid=pid) is not None


def _total(text: str, name: str, *labels: str) -> float:
    """The sum of every sample of `name` whose labels include each of `labels` (`k="v"`)."""
    total = 0.0
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0] == name and all(label in series for label in labels):
            total += float(value)
    return total


def test_two_workers_keep_each_dialog_on_its_worker(host_factory: Any, sipp: Sipp) -> None:
    """200 calls from 200 source ports: the upstream answers and sends the BYE, which must
    reach the worker that holds the dialog (the one named in Record-Route). No call fails."""
    host = host_factory("uas_sends_bye.xml")
    host.start()
    calls = 200
    result = sipp.run(
        "uac_invite_bye_from_upstream.xml", host.remote, transport="un", extra=PER_CALL,
        calls=calls, rate=20, limit=40, timeout_s=90,
    )  # fmt: skip
    assert result.ok and result.successful == calls, _explain(result, host)
    # both workers carried calls, each from its own upstream-facing port (never the listener's)
    ports = _via_ports(host.uas.messages())
    assert len(ports) == 2 and host.port not in ports, ports
    # one /metrics for the host: both workers' requests summed
    text = host.scrape()
    invites = _total(text, "sipguard_requests_total", 'method="INVITE"')
    assert invites >= 2 * calls, text  # every call: a challenged INVITE and the answered one
    assert _total(text, "sipguard_workers") == 2
    assert host.daemon.stop() == 0


def test_worker_killed_under_load_is_restarted(host_factory: Any, sipp: Sipp) -> None:
    host = host_factory()
    victim, survivor = host.start()
    calls = 300
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            sipp.run, "uac_invite_auth.xml", host.remote, transport="un", extra=PER_CALL,
            calls=calls, rate=15, limit=30, timeout_s=90, recv_timeout_ms=10000,
        )  # fmt: skip
        # under load: some calls went through first
        wait_for(lambda: len(_via_ports(host.uas.messages())) == 2, 30, "both workers in use")
        os.kill(victim, signal.SIGKILL)
        exited = host.daemon.wait_event("worker_exited", 10, pid=victim)
        assert exited["signal"] == "SIGKILL"

        def restarted() -> int | None:
            for event in host.daemon.logs():
                same = (
                    event.get("event") == "worker_started" and event["worker"] == exited["worker"]
                )
                if same and event["pid"] != victim:
                    return int(event["pid"])
            return None

        new_pid = wait_for(restarted, 30, "the killed worker started again")
        assert new_pid != survivor
        wait_for(lambda: _ready(host, new_pid), START_TIMEOUT, "the new worker ready")
        result = running.result(timeout=120)
    # calls whose transactions were on the killed worker may fail; the others flow
    failed = calls - result.successful
    print(f"worker killed under load: {result.successful} calls ok, {failed} failed")
    assert result.successful >= calls - 15, _explain(result, host)
    os.kill(survivor, 0)  # the survivor still runs (ProcessLookupError otherwise)
    # after the restart both workers serve again: every call of a new run succeeds
    before = host.uas.messages()
    after = sipp.run(
        "uac_invite_auth.xml",
        host.remote,
        transport="un",
        extra=PER_CALL,
        calls=40,
        rate=20,
        timeout_s=60,
    )
    assert after.ok and after.successful == 40, _explain(after, host)
    assert len(_via_ports(host.uas.messages()[len(before) :])) == 2
    assert host.daemon.stop() == 0


def test_sighup_reloads_every_worker_and_refuses_a_bad_file(host_factory: Any, sipp: Sipp) -> None:
    host = host_factory()
    host.start()
    ok = sipp.run(
        "uac_invite_auth.xml", host.remote, transport="un", extra=PER_CALL, calls=40, rate=20
    )
    assert ok.successful == 40, _explain(ok, host)
    # a bad file: refused once by the supervisor, no worker is asked to reload
    host.daemon.config_path.write_text("listen: [\n")
    os.kill(host.daemon.pid, signal.SIGHUP)
    host.daemon.wait_event("config_reload_failed", 30, supervisor=True)
    assert host.daemon.find_event("config_reloading", worker=0) is None
    assert host.daemon.find_event("config_reloading", worker=1) is None
    # a whitelist without our source: both workers apply it
    trunk = {**host.config["trunks"][0], "whitelist": ["127.0.0.2"]}
    host.rewrite(trunks=[trunk])
    os.kill(host.daemon.pid, signal.SIGHUP)
    host.daemon.wait_event("config_reloaded", 30, supervisor=True, failed_workers=[])
    for index in (0, 1):
        assert host.daemon.find_event("config_reloaded", worker=index), index
    refused = sipp.run(
        "uac_forbidden.xml", host.remote, transport="un", extra=PER_CALL, calls=60, rate=30
    )
    assert refused.ok and refused.successful == 60, _explain(refused, host)
    assert host.daemon.stop() == 0
