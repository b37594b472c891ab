"""`upstream_source_port`: the upstream-facing UDP socket keeps its port across restarts.

Owns: in process, `Server` binding the port of its worker (base + index) for each address
family, exclusively (no SO_REUSEADDR/SO_REUSEPORT: a second socket cannot share it, a stopped
one frees it at once), a start that cannot bind naming the key, and a reload that keeps, moves
or refuses the port as it does listeners. With the real daemon and SIPp on both sides: a call
set up before a restart is hung up by the upstream through the restarted daemon (its BYE is sent
to the port our Record-Route named); with `workers: 2` each worker sends from base + its index,
also once the supervisor restarted it.

Must never: use a non-loopback address, sleep to synchronise, leave a process running.
RFC 3261 §16.6 step 4 (Record-Route), §12.2 (in-dialog requests), §18.2.1 (UDP).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from sipguard.server import ListenerError, Server
from sipguard.settings import Settings, Upstream
from tests.integration.conftest import DaemonFactory
from tests.integration.harness import (
    V4,
    V6,
    Daemon,
    Sipp,
    SippResult,
    demo_config,
    free_port,
    free_port_run,
    hostport,
    received_requests,
    received_statuses,
    send_info,
)
from tests.integration.test_transport import EchoCore, make_settings
from tests.polling import wait_for, wait_for_async

DEADLINE = 10.0
START_TIMEOUT = 60.0  # seconds: three interpreters start on a shared, loaded machine


def _upstream(host: str, port: int = 5070) -> Upstream:
    where = f"[{host}]" if ":" in host else host
    return Upstream(f"sip:{where}:{port};transport=udp", "udp", host, port)


def _settings(base: int | None, *hosts: str) -> Settings:
    settings = make_settings(("tcp", V4))
    return replace(settings, upstream=tuple(_upstream(h) for h in hosts), upstream_source_port=base)


def _free_run(count: int) -> int:
    """`count` consecutive ports free for UDP on 127.0.0.1 and ::1."""
    for _ in range(50):
        base = free_port_run(count, V4)
        if all(_udp_bindable(V6, port) for port in range(base, base + count)):
            return base
    raise RuntimeError("no free run of ports on both loopbacks")


def _udp_bindable(host: str, port: int, *, share: bool = False) -> bool:
    """Whether a UDP socket can bind host:port now; `share`: one that asks to share it
    (SO_REUSEADDR and SO_REUSEPORT), as a second sipguard worker or process might."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# -- in process ------------------------------------------------------------------------------


async def test_worker_binds_base_plus_its_index_exclusively() -> None:
    base = _free_run(3)
    core = EchoCore()
    server = Server(_settings(base, V4, V6), core, worker=2)
    await server.start()
    try:
        assert sorted((a.host, a.port) for a in core.upstream_sockets) == [
            ("127.0.0.1", base + 2),
            ("::1", base + 2),
        ]
        # nobody shares it, not even a socket that asks to (a worker gets only its responses)
        assert not _udp_bindable(V4, base + 2, share=True)
        assert not _udp_bindable(V6, base + 2, share=True)
        # a second process with the same config and index (the old one still running) fails
        # to start, naming the key, rather than splitting the traffic
        second = Server(_settings(base, V4), EchoCore(), worker=2)
        with pytest.raises(ListenerError) as caught:
            await second.start()
        assert caught.value.key == "upstream_source_port"
        assert (
            caught.value.listener == f"udp://127.0.0.1:{base + 2} (toward the upstream, worker 2)"
        )
        assert "upstream_source_port + N" in caught.value.detail
    finally:
        await server.stop()
    # a quick restart: the port is free the moment the socket closed (UDP has no TIME_WAIT)
    assert _udp_bindable(V4, base + 2) and _udp_bindable(V6, base + 2)


async def test_absent_key_binds_an_ephemeral_port() -> None:
    core = EchoCore()
    server = Server(_settings(None, V4), core, worker=1)
    await server.start()
    try:
        (socket_address,) = core.upstream_sockets
        assert socket_address.port != 0
    finally:
        await server.stop()


async def test_reload_keeps_moves_or_refuses_the_port() -> None:
    first, second = _free_run(1), _free_run(1)
    core = EchoCore()
    settings = _settings(first, V4)
    server = Server(settings, core)
    await server.start()
    try:
        (kept,) = server.listeners.upstream_udp.values()
        # the same port: the socket is kept (not re-bound)
        assert await server.reload(replace(settings, source_sha256="2")) == []
        assert list(server.listeners.upstream_udp.values()) == [kept]
        # a port another socket holds: refused, the running config and socket stay
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind((V4, second))
            problems = await server.reload(replace(settings, upstream_source_port=second))
        assert len(problems) == 1, problems
        assert problems[0].startswith(
            f"test.yaml: upstream_source_port: udp://127.0.0.1:{second} (toward the upstream, "
            "worker 0): "
        )
        assert server.settings.upstream_source_port == first
        assert [a.port for a in core.upstream_sockets] == [first]
        assert list(server.listeners.upstream_udp.values()) == [kept]
        # what the refused reload opened is closed
        await wait_for_async(lambda: _udp_bindable(V4, second), DEADLINE, "the port freed")
        # once free: moved; the old port is closed, the core names the new one
        assert await server.reload(replace(settings, upstream_source_port=second)) == []
        assert [a.port for a in core.upstream_sockets] == [second]
        assert kept.local not in server.dispatcher.udp
        # closed once the loop ran the transport's close
        await wait_for_async(lambda: _udp_bindable(V4, first), DEADLINE, "the old port freed")
        # the key removed: the socket it has serves on (any port would do); kept until a restart
        assert await server.reload(replace(settings, upstream_source_port=None)) == []
        assert [a.port for a in core.upstream_sockets] == [second]
    finally:
        await server.stop()


# -- the daemon, SIPp on both sides -----------------------------------------------------------


# The top Via of a request the upstream received: the socket sipguard sent it from.
_TOP_VIA = re.compile(
    r"message received[^\n]*\n\s*\n(?:INVITE|OPTIONS) [^\n]*\n(?:(?!Via:)[^\n]*\n)*?"
    r"Via: SIP/2\.0/UDP [^\s:;]+:(\d+)"
)


def test_bye_from_upstream_reaches_client_after_a_restart(
    daemon_factory: DaemonFactory, sipp: Sipp
) -> None:
    """A call set up, the daemon stopped by PID and started again with the same config: the
    upstream's BYE, sent to the port our Record-Route named, reaches the caller through the
    new process, and the caller's 200 goes back to the upstream."""
    uas = sipp.start_uas("uas_sends_bye_on_info.xml", V4)
    base, sip_port = _free_run(1), free_port("udp")
    config = demo_config(
        listen=[f"udp://{V4}:{sip_port}"],
        upstream=[f"sip:{hostport(V4, uas.port)};transport=udp"],
        whitelist=[V4],
        extra={"upstream_source_port": base, "limits": {"shutdown_grace": 1.0}},
    )
    first = daemon_factory(config, name="first")
    results: list[SippResult] = []
    caller = threading.Thread(
        target=lambda: results.append(
            sipp.run(
                "uac_invite_bye_from_upstream.xml",
                hostport(V4, sip_port),
                recv_timeout_ms=25000,
                timeout_s=30,
            )
        )
    )
    caller.start()
    try:
        uas.wait_received("ACK", timeout=DEADLINE)
        call_id = first.wait_event("admitted", DEADLINE, method="INVITE")["call_id"]
        assert {int(p) for p in _TOP_VIA.findall(uas.messages())} == {base}
        assert first.stop() == 0
        second = daemon_factory(config, name="second")  # same config, new process
        send_info(uas.port, "upstream", call_id)
    finally:
        caller.join(40)  # SIPp's own -timeout (30 s) ends the call first
    assert not caller.is_alive()
    (result,) = results
    assert result.ok, result.explain() + "\n--- sipguard ---\n" + second.describe()
    assert received_requests(result.messages) == ["BYE"]
    wait_for(lambda: received_statuses(uas.messages())[-1:] == [200], 5, "the 200 for the BYE")
    assert uas.received() == ["INVITE", "ACK", "INFO"]
    assert second.alive() and second.pid != first.pid


class _ProbeSink:
    """A plain UDP socket standing in for the upstream: it remembers, per probe (an OPTIONS,
    unanswered: a down upstream is probed on), its source port and the port of its top Via."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((V4, 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.seen: list[tuple[int, int]] = []  # (source port, Via port)

    def read(self) -> None:
        with contextlib.suppress(TimeoutError):
            data, (_, source) = self.sock.recvfrom(65535)
            text = data.decode("utf-8", "replace")
            via = re.search(r"^Via: SIP/2\.0/UDP [^\s:;]+:(\d+)", text, re.MULTILINE)
            if text.startswith("OPTIONS ") and via is not None:
                self.seen.append((int(source), int(via.group(1))))

    def wait_ports(self, wanted: set[int], timeout: float) -> None:
        self.seen.clear()

        def all_seen() -> bool:
            self.read()
            return {source for source, _ in self.seen} >= wanted

        wait_for(all_seen, timeout, f"probes from ports {sorted(wanted)}")
        assert all(source == via for source, via in self.seen), self.seen


def test_two_workers_send_from_base_plus_index_also_after_a_restart(tmp_path: Path) -> None:
    """`workers: 2`: worker 0 probes the upstream from base, worker 1 from base + 1 (the port
    its Via names); worker 1 killed is started again by the supervisor on the same port."""
    base, sip_port = _free_run(2), free_port("udp")
    sink = _ProbeSink()
    config = demo_config(
        listen=[f"udp://{V4}:{sip_port}"],
        upstream=[f"sip:{hostport(V4, sink.port)};transport=udp"],
        whitelist=[V4],
        extra={
            "workers": 2,
            "upstream_source_port": base,
            "upstream_health": {"probe_interval": 0.3, "probe_timeout": 0.2},
            "limits": {"shutdown_grace": 1.0},
        },
    )
    daemon = Daemon(tmp_path / "host", config)
    with sink.sock, contextlib.ExitStack() as stack:
        stack.callback(daemon.__exit__, None, None, None)  # stopped by PID, whatever happens
        daemon.start(timeout=START_TIMEOUT)
        daemon.wait_event("started", START_TIMEOUT, supervisor=True)
        sink.wait_ports({base, base + 1}, DEADLINE)
        victim = daemon.wait_event("worker_started", DEADLINE, worker=1)["pid"]
        os.kill(victim, signal.SIGKILL)
        daemon.wait_event("worker_exited", DEADLINE, pid=victim)

        def restarted() -> int | None:
            for event in daemon.logs():
                ours = event.get("event") == "started" and event.get("worker") == 1
                if ours and event.get("pid") not in (None, victim):
                    return int(event["pid"])
            return None

        wait_for(restarted, START_TIMEOUT, "worker 1 started again")
        sink.wait_ports({base + 1}, DEADLINE)
        assert daemon.stop() == 0
