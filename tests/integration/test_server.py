"""The daemon's lifecycle: binding, exit codes, signals, reload, shutdown.

In-process tests drive `Server` with the transport tests' double core; subprocess tests run
`python -m sipguard run --config FILE` with the real core and stop it by PID.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sipguard.metrics import Metrics
from sipguard.notify import Notifier
from sipguard.observer import Observer
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Transport
from sipguard.server import ListenerError, Server, reserved_sources, stream_limits
from sipguard.settings import Listener, Trunk, Upstream
from sipguard.transport.stream_limits import StreamLimits
from tests.integration.test_transport import (
    DEADLINE,
    EchoCore,
    RecordingObserver,
    free_port,
    make_settings,
    sip,
    udp_client,
)
from tests.polling import wait_for, wait_for_async

ROOT = Path(__file__).resolve().parents[2]


class ReloadObserver(RecordingObserver):
    def __init__(self) -> None:
        super().__init__()
        self.reloaded: list[object] = []
        self.reload_failures: list[list[str]] = []
        self.listener_errors: list[tuple[str, str]] = []

    def config_reloaded(self, settings: object) -> None:
        self.reloaded.append(settings)

    def config_reload_failed(self, problems: list[str]) -> None:
        self.reload_failures.append(problems)

    def listener_error(self, listener: str, detail: str) -> None:
        self.listener_errors.append((listener, detail))


async def ask(server: Server, transport: str = "udp") -> bytes:
    """One request to a listener of the running server; its answer."""
    if transport == "udp":
        udp, client = await udp_client(server.address_of("udp"))
        try:
            udp.sendto(b"OPTIONS")
            return await client.next()
        finally:
            udp.close()
    address = server.address_of(transport)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        writer.write(sip(b"OPTIONS"))
        return await asyncio.wait_for(reader.readline(), DEADLINE)
    finally:
        writer.close()


# -- in process ------------------------------------------------------------------------------


async def test_started_reports_every_listener() -> None:
    observer = ReloadObserver()
    settings = make_settings(("udp", "127.0.0.1"), ("tcp", "127.0.0.1"), ("udp", "::1"))
    server = Server(settings, EchoCore(), observer=observer)
    await server.start()
    try:
        assert observer.started_with == [x.url for x in settings.listen]
        assert {a.transport for a in server.addresses.values()} == {Transport.UDP, Transport.TCP}
    finally:
        await server.stop()


async def test_port_in_use_raises_listener_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(("udp", "127.0.0.1"))
        settings = replace(settings, listen=(*settings.listen, Listener("tcp", "127.0.0.1", port)))
        server = Server(settings, EchoCore())
        with pytest.raises(ListenerError) as caught:
            await server.start()
        assert caught.value.listener == f"tcp://127.0.0.1:{port}"
        assert server.addresses == {}  # the UDP listener opened first was closed again


async def test_reload_adds_and_removes_listeners() -> None:
    core, observer = EchoCore(), ReloadObserver()
    settings = make_settings(("udp", "127.0.0.1"))
    server = Server(settings, core, observer=observer)
    await server.start()
    try:
        assert await ask(server, "udp") == b"OK 1\r\n"
        new = make_settings(("tcp", "127.0.0.1"), read_deadline=3.0)
        assert await server.reload(new) == []
        assert core.reconfigured == [new] and observer.reloaded == [new]
        assert list(server.addresses) == list(new.listen)
        assert await ask(server, "tcp") == b"OK 2\r\n"
        assert server.dispatcher.streams.limits.read_deadline == 3.0
    finally:
        await server.stop()


def _upstream(transport: str, host: str = "127.0.0.1", port: int = 5070) -> Upstream:
    where = f"[{host}]" if ":" in host else host
    return Upstream(f"sip:{where}:{port};transport={transport}", transport, host, port)


async def test_upstream_facing_udp_sockets_follow_the_config() -> None:
    """Issue 12 item 4: sipguard owns one UDP socket per family with a UDP upstream, whatever
    its listeners (here TCP only), tells the core, and a reload opens and closes them."""
    core = EchoCore()
    settings = replace(
        make_settings(("tcp", "127.0.0.1")),
        upstream=(_upstream("udp"), _upstream("udp", "::1"), _upstream("udp", "127.0.0.1", 5080)),
    )
    server = Server(settings, core)
    await server.start()
    try:
        v4, v6 = core.upstream_sockets  # one per family, not one per upstream
        assert (v4.transport, v4.host, v6.host) == (Transport.UDP, "127.0.0.1", "::1")
        assert v4.port and server.dispatcher.udp[v4].local == v4
        # the socket is live: a datagram to it reaches the core as received on it
        udp, _client = await udp_client(v4)
        udp.sendto(b"SIP/2.0 200 OK")
        await wait_for_async(lambda: len(core.received) == 1, DEADLINE, "the datagram")
        assert core.received[0][2] == v4
        udp.close()
        assert await server.reload(replace(settings, upstream=(_upstream("udp"),))) == []
        assert core.upstream_sockets == [v4]  # kept, same port
        assert v6 not in server.dispatcher.udp
        assert await server.reload(replace(settings, upstream=(_upstream("tcp"),))) == []
        assert core.upstream_sockets == [] and server.dispatcher.udp == {}
    finally:
        await server.stop()


async def test_reload_bind_failure_keeps_old_config() -> None:
    core, observer = EchoCore(), ReloadObserver()
    settings = make_settings(("udp", "127.0.0.1"))
    server = Server(settings, core, observer=observer)
    await server.start()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            new = replace(
                settings,
                listen=(
                    Listener("tcp", "127.0.0.1", free_port()),
                    Listener("tcp", "127.0.0.1", port),
                ),
            )
            problems = await server.reload(new)
        assert problems and f"tcp://127.0.0.1:{port}" in problems[0]
        assert core.reconfigured == [] and observer.reload_failures == [problems]
        assert list(server.addresses) == list(settings.listen)
        assert await ask(server, "udp") == b"OK 1\r\n"
    finally:
        await server.stop()


async def test_reload_broken_file_keeps_running(tmp_path: Path) -> None:
    core, observer = EchoCore(), ReloadObserver()
    broken = tmp_path / "sipguard.yaml"
    broken.write_text("listen: [udp://127.0.0.1:99999]\nupstream: 7\n")
    server = Server(make_settings(("udp", "127.0.0.1")), core, observer=observer)
    await server.start()
    try:
        problems = await server.reload_from_file(str(broken))
        assert problems and observer.reload_failures == [problems]
        assert core.reconfigured == []
        assert await ask(server, "udp") == b"OK 1\r\n"
    finally:
        await server.stop()


class ReconfigureDefectCore(EchoCore):
    def reconfigure(self, settings: object) -> None:
        raise RuntimeError("a defect in reconfigure")


class BusyCore(EchoCore):
    """A core that always has a transaction in flight: the drain waits the whole grace."""

    def in_flight(self) -> int:
        return 1


def notifications(sock: socket.socket) -> list[list[str]]:
    """Every datagram waiting on a test NOTIFY_SOCKET, as its assignments."""
    sent: list[list[str]] = []
    while True:
        try:
            sent.append(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return sent


async def test_reload_unexpected_loader_error_keeps_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reload that fails with something other than ConfigError (a defect in the loader, an
    OS error it did not put into words) is a refused reload: counted result="error", reported
    with the error's type and message, READY=1 after RELOADING=1, the old config kept."""
    name = f"@sipguard-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind("\0" + name[1:])
        notify.setblocking(False)
        metrics = Metrics()
        observer = Observer(metrics, None, Notifier(name))
        core = EchoCore()
        server = Server(make_settings(("udp", "127.0.0.1")), core, observer=observer)
        await server.start()
        try:

            def broken_loader(path: str) -> object:
                raise RuntimeError(f"loader defect on {path}")

            monkeypatch.setattr("sipguard.server.lifecycle._load", broken_loader)
            problems = await server.reload_from_file("new.yaml")
            assert problems == ["new.yaml: reload failed: RuntimeError: loader defect on new.yaml"]
            assert core.reconfigured == []
            sample = metrics.registry.get_sample_value
            assert sample("sipguard_config_reloads_total", {"result": "error"}) == 1
            assert sample("sipguard_config_reloads_total", {"result": "ok"}) == 0
            sent = notifications(notify)
            assert [x[0] for x in sent] == ["READY=1", "RELOADING=1", "READY=1"], sent
            assert await ask(server, "udp") == b"OK 1\r\n"
        finally:
            await server.stop()


async def test_reload_core_defect_keeps_old_config() -> None:
    """core.reconfigure raising leaves everything as it was: the listener the new file added
    is closed again, the old one serves, and the failure is reported (not raised)."""
    core, observer = ReconfigureDefectCore(), ReloadObserver()
    settings = make_settings(("udp", "127.0.0.1"))
    server = Server(settings, core, observer=observer)
    await server.start()
    try:
        added = Listener("tcp", "127.0.0.1", free_port())
        new = replace(settings, listen=(*settings.listen, added))
        problems = await server.reload(new)
        assert problems == ["test.yaml: reload failed: RuntimeError: a defect in reconfigure"]
        assert observer.reload_failures == [problems] and observer.reloaded == []
        assert server.settings is settings and list(server.addresses) == list(settings.listen)
        with pytest.raises(OSError):
            await asyncio.open_connection(added.host, added.port)
        assert await ask(server, "udp") == b"OK 1\r\n"
    finally:
        await server.stop()


async def test_hurry_ends_the_drain() -> None:
    """A second SIGTERM calls hurry(): stop() no longer waits for in-flight work."""
    settings = make_settings(("udp", "127.0.0.1"), shutdown_grace=60.0)
    server = Server(settings, BusyCore())
    await server.start()
    stopping = asyncio.get_running_loop().create_task(server.stop())
    try:
        await wait_for_async(lambda: server.stopping, DEADLINE, "the drain to begin")
        assert not stopping.done()  # draining: the core has work in flight
        server.hurry()
        await asyncio.wait_for(stopping, DEADLINE)
        assert server.stopped.is_set() and server.addresses == {}
    finally:
        server.hurry()
        await stopping


def test_default_stream_limits_are_the_settings_defaults() -> None:
    """One home: `settings.Limits` holds the defaults; `StreamLimits` reads them."""
    assert stream_limits(make_settings(("tcp", "127.0.0.1"))) == StreamLimits()


def test_reserved_sources_are_named_addresses() -> None:
    """SECURITY-CASES 9: the connections kept back from strangers are for the addresses a
    trunk's whitelist or an upstream names; an empty whitelist (any address) names nobody."""
    settings = replace(
        make_settings(("tcp", "127.0.0.1")),
        trunks=(
            Trunk("pbx", whitelist=parse_rules(("192.0.2.0/24", "2001:db8::1"))),
            Trunk("anyone"),
        ),
        upstream=(Upstream("sip:198.51.100.7:5060", "udp", "198.51.100.7", 5060),),
    )
    reserved = reserved_sources(settings)
    assert reserved is not None
    for ip in ("192.0.2.9", "::ffff:192.0.2.9", "2001:db8::1", "198.51.100.7"):
        assert reserved(ip), ip
    for ip in ("203.0.113.1", "192.0.3.1", "2001:db8::2", "not an address"):
        assert not reserved(ip), ip
    only_open = replace(settings, trunks=(Trunk("anyone"),), upstream=())
    assert reserved_sources(only_open) is None


async def test_reload_replaces_reserved_sources() -> None:
    settings = make_settings(("udp", "127.0.0.1"))
    server = Server(settings, EchoCore())
    await server.start()
    try:
        streams = server.dispatcher.streams
        assert streams.reserved is None
        new = replace(settings, trunks=(Trunk("pbx", whitelist=parse_rules(("127.0.0.3",))),))
        assert await server.reload(new) == []
        assert streams.reserved is not None and streams.reserved("127.0.0.3")
        assert not streams.reserved("127.0.0.4")
    finally:
        await server.stop()


async def test_tick_called_every_second() -> None:
    core = EchoCore()
    server = Server(make_settings(("udp", "127.0.0.1")), core)
    await server.start()
    try:
        await wait_for_async(lambda: core.ticks >= 1, DEADLINE, "a tick")
    finally:
        await server.stop()


async def test_stop_closes_connections() -> None:
    observer = ReloadObserver()
    server = Server(make_settings(("tcp", "127.0.0.1")), EchoCore(), observer=observer)
    await server.start()
    address = server.address_of("tcp")
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(sip(b"A"))
    assert await reader.readline() == b"OK 1\r\n"
    await server.stop()
    assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
    assert observer.closed == ["tcp"]
    with pytest.raises(OSError):
        await asyncio.open_connection(address.host, address.port)


# -- the real daemon -------------------------------------------------------------------------


def write_config(path: Path, udp: int, tcp: int, *, extra_tcp: int | None = None) -> None:
    listen = [f"udp://127.0.0.1:{udp}", f"tcp://127.0.0.1:{tcp}"]
    if extra_tcp is not None:
        listen.append(f"tcp://127.0.0.1:{extra_tcp}")
    path.write_text(
        "listen:\n"
        + "".join(f"  - {x}\n" for x in listen)
        + f"upstream:\n  - sip:127.0.0.1:{free_port()};transport=udp\n"
        + "auth:\n  realm: sipguard.test\n"
        + "trunks:\n  - name: local\n    whitelist: [127.0.0.1]\n"
        + "limits:\n  shutdown_grace: 2\n"
    )


class Daemon:
    """`python -m sipguard run` in its own session; its output (the JSON log on stdout with the
    observer wired by the CLI, lifecycle lines on stderr without it) read by a thread."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipguard", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        def met() -> bool:
            if condition():
                return True
            if self.proc.poll() is not None:  # it exited: read what it wrote, then decide
                self._reader.join(2)
                if condition():
                    return True
                raise AssertionError(f"exited {self.proc.returncode}: {self.lines}")
            return False

        try:
            wait_for(met, 15, what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {self.lines}") from None

    def wait_line(self, text: str) -> None:
        self.wait_for(lambda: any(text in line for line in self.lines), repr(text))

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(10)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.stop()


def options_to(udp_port: int) -> bytes:
    """An OPTIONS addressed to sipguard itself: the core answers it 200 (a keep-alive ping)."""
    request = (
        f"OPTIONS sip:127.0.0.1:{udp_port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-test-1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=1\r\n"
        f"To: <sip:127.0.0.1:{udp_port}>\r\n"
        "Call-ID: server-test-1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        sock.sendto(request.encode(), ("127.0.0.1", udp_port))
        return sock.recv(65536)


def test_config_error_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("listen: [udp://127.0.0.1:70000]\n")
    done = subprocess.run(
        [sys.executable, "-m", "sipguard", "run", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 78
    assert b"listen" in done.stderr


def test_port_in_use_exits_71(tmp_path: Path) -> None:
    config = tmp_path / "sipguard.yaml"
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config(config, free_port(), port)
        done = subprocess.run(
            [sys.executable, "-m", "sipguard", "run", "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            check=False,
            timeout=30,
        )
    assert done.returncode == 71, done.stderr
    assert f"tcp://127.0.0.1:{port}".encode() in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_exits_0(tmp_path: Path, daemons: list[Daemon], signum: int) -> None:
    config = tmp_path / "sipguard.yaml"
    udp = free_port()
    write_config(config, udp, free_port())
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_line("started")
    assert options_to(udp).startswith(b"SIP/2.0 200 ")
    daemon.proc.send_signal(signum)
    assert daemon.proc.wait(15) == 0
    daemon.wait_line("stopping")


def test_sighup_reload_with_broken_file_keeps_running(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    config = tmp_path / "sipguard.yaml"
    udp, tcp = free_port(), free_port()
    write_config(config, udp, tcp)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_line("started")
    config.write_text("listen: [udp://127.0.0.1:99999]\n")  # broken
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_line("config_reload_failed")
    assert daemon.proc.poll() is None
    assert options_to(udp).startswith(b"SIP/2.0 200 ")
    # A good file is then applied: its new listener opens.
    extra = free_port()
    write_config(config, udp, tcp, extra_tcp=extra)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_line("config_reloaded")
    with socket.create_connection(("127.0.0.1", extra), timeout=DEADLINE):
        pass
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
