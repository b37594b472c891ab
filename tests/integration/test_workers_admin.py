"""Acceptance of the admin API with `workers: 2` (issues 15 and 17): the real supervisor and
workers on loopback, the real `sipguard admin` command.

Owns: the proof that the supervisor serves one admin listener for the host and that each
request reaches every worker: a source banned with `sipguard admin ban` is refused whichever
worker its datagrams reach, `sipguard admin unban` serves it again on every worker, a wrong
token gets 401 (logged with the peer) and changes nothing, `sipguard admin reload` of a broken
file answers every error and keeps both workers serving (a good file then reloads both), and
`sipguard admin status` lists the two workers and their pids.

How "every worker" is shown: the kernel spreads UDP datagrams over SO_REUSEPORT sockets by
source address and port, so the source talks from PEERS ports at once; all of them reaching one
worker has a chance of 2 / 2**PEERS (6e-5 for 16). Each check sends from every port.

Must never: target anything but loopback; synchronise with a fixed sleep (the waits poll with a
deadline; "no answer" is a bounded select); leave a process behind (the daemon is stopped by
PID in the fixture's teardown).
"""

from __future__ import annotations

import json
import secrets
import select
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import V4, Daemon, demo_config, free_port, hostport
from tests.integration.test_protection import UdpPeer
from tests.sipclient import parse_message

pytestmark = pytest.mark.integration

TOKEN = secrets.token_hex(32)
SOURCE = "127.0.0.5"  # the source banned and unbanned
PEERS = 16  # source ports at once (see the module docstring)
START_TIMEOUT = 60.0  # seconds: three interpreters start on a shared, loaded machine
SILENCE = 1.5  # seconds without an answer that count as "dropped"


class Host:
    """sipguard with `workers: 2` and an admin API, whitelisting V4 and SOURCE."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port("udp", V4)
        self.admin_port = free_port("tcp", V4)
        token_file = workdir / "admin.token"
        workdir.mkdir(parents=True, exist_ok=True)
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        self.config = demo_config(
            listen=[f"udp://{V4}:{self.port}"],
            upstream=[f"sip:{hostport(V4, free_port('udp', V4))};transport=udp"],
            whitelist=[V4, SOURCE],
            extra={
                "workers": 2,
                "limits": {"shutdown_grace": 1.0},
                "admin": {"listen": f"{V4}:{self.admin_port}", "token_file": str(token_file)},
            },
        )
        self.daemon = Daemon(workdir, self.config)

    def api(self, method: str, path: str, token: str = TOKEN) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://{V4}:{self.admin_port}{path}",
            method=method,
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def cli(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sipguard", "admin", "--config",
             str(config or self.daemon.config_path), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def answered(self) -> int:
        """OPTIONS pings from SOURCE on PEERS source ports at once: how many got their 200
        (a whitelisted, unbanned source is answered without a challenge; a banned one never)."""
        with ExitStack() as stack:
            peers = [stack.enter_context(UdpPeer(SOURCE, (V4, self.port))) for _ in range(PEERS)]
            branches = {}
            for peer in peers:
                ping = peer.build("OPTIONS", uri=f"sip:{V4}:{self.port}")
                branches[peer.sock.fileno()] = parse_message(ping).branch
                peer.send(ping)
            waiting = {peer.sock.fileno(): peer for peer in peers}
            answered = 0
            while waiting:
                ready, _, _ = select.select(list(waiting), [], [], SILENCE)
                if not ready:
                    break
                for fileno in ready:
                    reply = parse_message(waiting[fileno].sock.recv(65535))
                    if reply.is_response and reply.branch == branches[fileno]:
                        answered += reply.status == 200
                        del waiting[fileno]
            return answered


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    made = Host(tmp_path / "host")
    try:
        made.daemon.start(timeout=START_TIMEOUT)
        made.daemon.wait_event("admin_listening", START_TIMEOUT, supervisor=True)
        yield made
    finally:
        made.daemon.__exit__(None, None, None)


def test_admin_api_of_two_workers(host: Host, tmp_path: Path) -> None:
    started = host.daemon.wait_event("started", START_TIMEOUT, supervisor=True)
    status = host.cli("--json", "status")
    assert status.returncode == 0, status.stderr
    answer = json.loads(status.stdout)
    assert answer["workers"] == 2 and answer["pid"] == host.daemon.pid
    assert sorted(answer["worker_pids"]) == sorted(started["pids"])
    text = host.cli("status").stdout.splitlines()
    assert "workers: 2" in text
    assert f"worker_pids: {' '.join(str(p) for p in answer['worker_pids'])}" in text
    assert host.answered() == PEERS  # served before anything is banned

    # `sipguard admin ban`: refused on every port, so by both workers.
    banned = host.cli("ban", SOURCE, "--duration", "600")
    assert banned.returncode == 0 and banned.stdout.startswith(f"banned {SOURCE} until")
    assert host.answered() == 0
    for index in (0, 1):  # each worker placed the ban (logged with its index)
        host.daemon.wait_event("banned", 10, worker=index, src_ip=SOURCE)
    listed = host.cli("--json", "bans")
    assert [b["address"] for b in json.loads(listed.stdout)["bans"]] == [SOURCE]

    # A wrong token: 401, logged with the peer by the supervisor, and the ban stays.
    wrong = tmp_path / "wrong.token"
    wrong.write_text("w" * 64 + "\n")
    wrong.chmod(0o600)
    wrong_config = tmp_path / "wrong.yaml"
    config = yaml.safe_load(host.daemon.config_path.read_text())
    config["admin"]["token_file"] = str(wrong)
    wrong_config.write_text(yaml.safe_dump(config))
    refused = host.cli("unban", SOURCE, config=wrong_config)
    assert refused.returncode == 77, refused.stderr
    assert host.api("DELETE", f"/v1/bans/{SOURCE}", token="w" * 64)[0] == 401
    event = host.daemon.wait_event("admin_unauthorized", 10, supervisor=True)
    assert event["src_ip"] == V4 and event["src_port"] > 0
    assert host.answered() == 0

    # `sipguard admin unban`: served again on every port at once.
    lifted = host.cli("unban", SOURCE)
    assert (lifted.returncode, lifted.stdout) == (0, f"unbanned {SOURCE}\n"), lifted.stderr
    assert host.answered() == PEERS
    assert host.api("GET", "/v1/bans") == (200, {"bans": []})
    assert host.cli("unban", SOURCE).returncode == 1  # on no worker any more

    # Trunks and upstreams: the lone daemon's shapes, summed over the workers.
    status_code, trunks = host.api("GET", "/v1/trunks")
    assert status_code == 200 and [t["name"] for t in trunks["trunks"]] == ["demo"]
    assert trunks["trunks"][0]["active_calls"] == 0
    status_code, upstreams = host.api("GET", "/v1/upstreams")
    assert status_code == 200 and len(upstreams["upstreams"]) == 1

    # `sipguard admin reload` of a broken file: every error, both workers keep serving.
    running = host.api("GET", "/v1/status")[1]["config"]
    good = host.daemon.config_path.read_text()
    host.daemon.config_path.write_text(good.replace("name: demo", "name: 'bad name'") + "x: 1\n")
    broken = host.cli("reload")
    assert broken.returncode == 78, broken.stderr
    assert "trunks[0].name" in broken.stderr and "x: unknown key" in broken.stderr
    assert host.daemon.find_event("config_reloading", worker=0) is None  # no worker asked
    assert host.api("GET", "/v1/status")[1]["config"] == running
    assert host.answered() == PEERS
    # a good file (SOURCE no longer whitelisted): applied by both workers
    trunk = {**host.config["trunks"][0], "whitelist": [V4]}
    host.daemon.config_path.write_text(yaml.safe_dump({**host.config, "trunks": [trunk]}))
    applied = host.cli("--json", "reload")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["running"]["sha256"] != running["sha256"]
    for index in (0, 1):
        assert host.daemon.find_event("config_reloaded", worker=index), index
    assert host.answered() == 0  # not whitelisted any more, on either worker
    assert host.daemon.stop() == 0
