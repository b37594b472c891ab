"""Real-peer test harness: the sipguard daemon, SIPp as client and upstream, TLS certificates.

Owns: starting and stopping the processes an integration test needs (the daemon from a config
dict, SIPp UACs and UASs), finding free loopback ports, turning the SIPp scenarios in
tests/scenarios/ into runs with bounded time and call counts, trustme certificates, and a small
TCP-to-TLS bridge (the Debian SIPp 3.6 build has no TLS, see `TlsBridge`).

Must never: target anything but loopback (127.0.0.0/8, ::1); wait with a fixed sleep (every wait
polls a condition against a deadline); leave a process behind (everything it starts is stopped
by PID in `close()`/`stop()`, which the fixtures call in teardown); run SIPp without `-m`,
`-timeout`, `-recv_timeout` and a coreutils `timeout` around it.

RFC 3261 sections the scenarios exercise: §10 (REGISTER), §22 (digest challenge), §16 (proxy
behaviour: Record-Route, Route), §9 (CANCEL), §17.1.1.3 (ACK to a non-2xx final response).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import yaml

from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "scenarios"
SIPP = shutil.which("sipp")
V4 = "127.0.0.1"
V6 = "::1"
REFUSED_V4 = "127.0.0.2"  # on Linux the whole 127/8 is on lo: a second, non-whitelisted source
REALM = "sipguard.test"
USER = "alice"
PASSWORD = "s3cret"  # the well-known test credential of the demo trunk

Kind = Literal["udp", "tcp"]
SippTransport = Literal["u1", "un", "t1"]  # un: a UDP socket (source port) per call

_AUTH_LEG = re.compile(r"[ \t]*<!-- auth:begin -->.*?<!-- auth:end -->[ \t]*\n", re.S)
_AUTH_LINE = re.compile(r"^[ \t]*\[authentication[^\]]*\][ \t]*\n", re.M)


class HarnessError(RuntimeError):
    """A peer did not come up or did not stop as it should (a test-environment problem)."""


# --------------------------------------------------------------------------- addresses, waiting


def ensure_loopback(host: str) -> str:
    """Return host if it is a loopback address; refuse anything else."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address; the harness only targets loopback")
    return host


def bracket(host: str) -> str:
    """Host as it appears in a URI or host:port: IPv6 in brackets (RFC 3261 §25.1)."""
    return f"[{host}]" if ":" in host else host


def hostport(host: str, port: int) -> str:
    return f"{bracket(host)}:{port}"


def send_info(port: int, user: str, call_id: str) -> None:
    """An INFO for `call_id` sent straight to the SIPp on `port` (not through sipguard): what
    releases a scenario that holds its call until an INFO comes (`user` in its Request-URI)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((V4, 0))
        own = sock.getsockname()[1]
        info = (
            f"INFO sip:{user}@{hostport(V4, port)} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {hostport(V4, own)};branch=z9hG4bK{secrets.token_hex(8)}\r\n"
            f"From: <sip:trigger@{V4}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{user}@sipguard.test>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INFO\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(info.encode(), (V4, port))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(kind: Kind, host: str, port: int) -> bool:
    stype = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(_family(host), stype) as sock:
        if kind == "tcp":  # as servers do: TIME_WAIT leftovers do not count, a listener does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(kind: Kind | Literal["both"] = "udp", host: str = V4) -> int:
    """A port that is free on host for kind; "both": free for UDP and TCP at once.

    The port is released before it is returned, so a race with another process is possible
    but unlikely for ephemeral ports; callers bind it right away.
    """
    ensure_loopback(host)
    for _ in range(200):
        first: Kind = "tcp" if kind == "tcp" else "udp"
        stype = socket.SOCK_DGRAM if first == "udp" else socket.SOCK_STREAM
        with socket.socket(_family(host), stype) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if kind != "both" or _bindable("tcp", host, port):
            return port
    raise HarnessError(f"no free {kind} port on {host}")


def free_port_run(count: int, host: str = V4) -> int:
    """The first of `count` consecutive ports free for UDP and TCP on host, drawn below the
    kernel's ephemeral range (32768 and up), where no socket bound to port 0 can take one of them
    between this check and the caller's bind. For peers that bind port+1 themselves (baresip's
    TLS transport)."""
    ensure_loopback(host)
    for _ in range(200):
        first = random.randrange(20000, 32000 - count)
        ports = range(first, first + count)
        if all(_bindable(kind, host, port) for port in ports for kind in ("udp", "tcp")):
            return first
    raise HarnessError(f"no {count} consecutive free ports on {host}")


def port_in_use(kind: Kind, host: str, port: int) -> bool:
    return not _bindable(kind, host, port)


def _stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int:
    """Signal proc by its PID and wait; SIGKILL it (and its own process group) if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: pgid == pid
            return proc.wait(5)
    return int(proc.returncode)


# --------------------------------------------------------------------------- the daemon


def demo_config(
    *,
    listen: Iterable[str],
    upstream: Iterable[str | Mapping[str, Any]],
    tls: TlsFiles | None = None,
    whitelist: Iterable[str] = (V4, V6),
    metrics_port: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A daemon config (DESIGN.md §3) with the demo trunk: alice / s3cret in sipguard.test."""
    config: dict[str, Any] = {
        "listen": list(listen),
        "upstream": list(upstream),
        "auth": {"realm": REALM, "algorithms": ["MD5"], "nonce_ttl": 300},
        "trunks": [
            {
                "name": "demo",
                "whitelist": list(whitelist),
                "credentials": [{"username": USER, "password": PASSWORD}],
            }
        ],
        "log": {"level": "info", "format": "json"},
    }
    if tls is not None:
        config["tls"] = {"certificate": str(tls.server_cert), "private_key": str(tls.server_key)}
    if metrics_port is not None:
        config["metrics"] = {"listen": f"{V4}:{metrics_port}"}
    if extra:
        config.update(extra)
    return config


class Daemon:
    """`python -m sipguard run --config FILE` as a subprocess, from a config dict.

    stdout (JSON log lines) and stderr go to files in workdir; `start()` returns once the
    `started` event is logged. Use as a context manager (or call `stop()` in a finally).
    """

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any],
        *,
        name: str = "sipguard",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = dict(config)
        self.config_path = workdir / f"{name}.yaml"
        self.stdout_path = workdir / f"{name}.stdout.jsonl"
        self.stderr_path = workdir / f"{name}.stderr.txt"
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise HarnessError("the daemon was not started")
        return self._proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> Daemon:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "sipguard", "run", "--config", str(self.config_path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # its own process group: a SIGINT to pytest spares it
            )

        def started() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"sipguard exited with {self.proc.returncode} before it started:\n"
                    + self.describe()
                )
            return self.find_event("started")

        try:
            wait_for(started, timeout, "the daemon's started event")
        except TimeoutError as exc:
            self.kill()
            raise HarnessError(f"{exc}:\n{self.describe()}") from None
        except BaseException:
            self.kill()
            raise
        return self

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON line on stdout so far (lines that are not JSON objects are skipped)."""
        events: list[dict[str, Any]] = []
        if not self.stdout_path.exists():
            return events
        for raw in self.stdout_path.read_bytes().splitlines():
            line = raw.strip()
            if not line.startswith(b"{"):
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue  # a partly written last line
            if isinstance(value, dict):
                events.append(value)
        return events

    def find_event(self, name: str, **fields: object) -> dict[str, Any] | None:
        for event in self.logs():
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                return event
        return None

    def wait_event(self, name: str, timeout: float = 5.0, **fields: object) -> dict[str, Any]:
        return wait_for(lambda: self.find_event(name, **fields), timeout, f"log event {name!r}")

    def stderr(self) -> str:
        if not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")

    def describe(self, tail: int = 40) -> str:
        out = self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""
        lines = [*out.splitlines()[-tail:], "--- stderr ---", *self.stderr().splitlines()[-tail:]]
        return "\n".join(lines)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send sig to the daemon's PID, wait up to timeout; returns the exit code.

        Raises HarnessError if it had to be killed (it did not honour sig in time).
        """
        if self._proc is None:
            raise HarnessError("the daemon was not started")
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)
            try:
                self.returncode = self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise HarnessError(
                    f"sipguard did not exit within {timeout}s of signal {sig}"
                ) from None
        self.returncode = self._proc.returncode
        return int(self.returncode)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.returncode = _stop_process(self._proc, signal.SIGKILL, 5)

    def __enter__(self) -> Daemon:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.alive():
            # a HarnessError means stop() had to kill it; the test's own assertion matters more
            with contextlib.suppress(HarnessError):
                self.stop(timeout=10)
        self.kill()


# --------------------------------------------------------------------------- SIPp


@dataclass(frozen=True, slots=True)
class SippResult:
    """The outcome of one SIPp client run."""

    args: tuple[str, ...]
    returncode: int  # 0: every call succeeded; 1: some failed; 124: coreutils timeout hit
    stdout: str
    stderr: str
    stats: dict[str, str]  # the last line of the -trace_stat CSV, by column name
    errors: str  # the -trace_err file
    messages: str  # the -trace_msg file: every message sent and received
    workdir: Path

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", "0") or 0)

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", "0") or 0)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def explain(self, tail: int = 60) -> str:
        """Enough context for an assertion message."""
        parts = [
            f"sipp exited {self.returncode}: {' '.join(self.args)}",
            f"successful={self.successful} failed={self.failed}",
            "--- errors ---",
            "\n".join(self.errors.splitlines()[-tail:]),
            "--- messages ---",
            "\n".join(self.messages.splitlines()[-tail:]),
            "--- stderr ---",
            "\n".join(self.stderr.splitlines()[-10:]),
        ]
        return "\n".join(parts)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _last_stats(path: Path) -> dict[str, str]:
    lines = [line for line in _read(path).splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    names = lines[0].split(";")
    return dict(zip(names, lines[-1].split(";"), strict=False))


def received_requests(messages: str) -> list[str]:
    """Request methods SIPp logged as received, in order (from a -trace_msg file)."""
    methods = []
    lines = messages.splitlines()
    for i, line in enumerate(lines):
        if "message received" in line and i + 2 < len(lines):
            first = lines[i + 2].split(" ", 1)[0]
            if first and not first.startswith("SIP/"):
                methods.append(first)
    return methods


def received_statuses(messages: str) -> list[int]:
    """Response status codes SIPp logged as received, in order."""
    codes = []
    lines = messages.splitlines()
    for i, line in enumerate(lines):
        if "message received" in line and i + 2 < len(lines):
            first = lines[i + 2].split(" ")
            if first[0].startswith("SIP/") and len(first) > 1 and first[1].isdigit():
                codes.append(int(first[1]))
    return codes


def direct_variant(scenario: Path, workdir: Path) -> Path:
    """A copy of a UAC scenario without its challenge leg, to run straight against a UAS.

    The leg sits between `<!-- auth:begin -->` and `<!-- auth:end -->`; the [authentication]
    line goes too (with no challenge SIPp has nothing to answer). The relative [branch-N]
    offsets stay valid because the leg is stripped as a whole.
    """
    text = scenario.read_text(encoding="iso-8859-1")
    stripped = _AUTH_LINE.sub("", _AUTH_LEG.sub("", text))
    if stripped == text:
        raise ValueError(f"{scenario.name} has no challenge leg to strip")
    out = workdir / f"direct_{scenario.name}"
    out.write_text(stripped, encoding="iso-8859-1")
    return out


def _scenario_path(scenario: str | Path) -> Path:
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS / path
    if path.suffix != ".xml":
        path = path.with_suffix(".xml")
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


class SippServer:
    """A running SIPp UAS (the upstream stand-in). Stop it with stop(); messages() reads its log."""

    def __init__(
        self, proc: subprocess.Popen[bytes], workdir: Path, host: str, port: int, kind: Kind
    ) -> None:
        self.proc = proc
        self.workdir = workdir
        self.host = host
        self.port = port
        self.kind = kind

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def uri(self) -> str:
        return f"sip:{hostport(self.host, self.port)};transport={self.kind}"

    def messages(self) -> str:
        return _read(self.workdir / "messages.log")

    def received(self) -> list[str]:
        """Request methods received so far."""
        return received_requests(self.messages())

    def wait_received(self, method: str, count: int = 1, timeout: float = 5.0) -> list[str]:
        def enough() -> list[str] | None:
            got = self.received()
            return got if got.count(method) >= count else None

        return wait_for(enough, timeout, f"the UAS to receive {count} {method}")

    def stats(self) -> dict[str, str]:
        return _last_stats(self.workdir / "stat.csv")

    def screen(self) -> str:
        return _read(self.workdir / "screen.txt")

    def stop(self, timeout: float = 5.0) -> int:
        return _stop_process(self.proc, signal.SIGTERM, timeout)


class Sipp:
    """Runs SIPp clients and servers in a work directory; close() stops every server."""

    def __init__(self, workdir: Path) -> None:
        if SIPP is None:
            raise HarnessError("sipp is not installed (apt-get install sip-tester)")
        self.sipp = SIPP
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.servers: list[SippServer] = []
        self._runs = 0

    def _rundir(self, label: str) -> Path:
        self._runs += 1
        path = self.workdir / f"sipp{self._runs:02d}-{label}"
        path.mkdir()
        return path

    @staticmethod
    def _common(workdir: Path, local_ip: str, local_port: int, transport: str) -> list[str]:
        return [
            "-i", local_ip,
            "-p", str(local_port),
            "-t", transport,
            "-nostdin",  # no terminal: never read keys
            # the control socket binds 0.0.0.0:8888+ by default: keep it on loopback
            "-ci", V4,
            "-cp", str(free_port("udp", V4)),
            "-trace_err", "-error_file", str(workdir / "errors.log"),
            "-trace_msg", "-message_file", str(workdir / "messages.log"),
            "-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "1",
            "-trace_screen", "-screen_file", str(workdir / "screen.txt"),
        ]  # fmt: skip

    def run(
        self,
        scenario: str | Path,
        remote: str,
        *,
        transport: SippTransport = "u1",
        local_ip: str = V4,
        local_port: int | None = None,
        calls: int = 1,
        rate: float = 10.0,
        limit: int | None = None,
        auth_user: str = USER,
        auth_pass: str = PASSWORD,
        service: str = "service",
        auth_uri: str | None = None,
        pause_ms: int = 100,
        keys: Mapping[str, str] | None = None,
        timeout_s: float = 20.0,
        recv_timeout_ms: int = 5000,
        extra: Iterable[str] = (),
    ) -> SippResult:
        """Run a UAC scenario against remote ("127.0.0.1:5060" or "[::1]:5060") and wait for it.

        Bounded three ways: -m calls, SIPp's own -timeout (soft, with -timeout_error) and a
        coreutils timeout 5 s later (hard; SIPp waits for calls in progress after -timeout).

        auth_uri: the digest `uri` SIPp puts in its credentials. SIPp's default is
        sip:REMOTE_IP:REMOTE_PORT whatever the Request-URI, which is right for our REGISTERs
        but not for an INVITE to sip:SERVICE@REMOTE; sipguard (RFC 2617 §3.2.2.5, DESIGN §4)
        refuses a digest uri that differs from the Request-URI. So by default, a scenario
        that sends `INVITE sip:[service]@...` gets -auth_uri SERVICE@REMOTE.
        """
        ensure_loopback(local_ip)
        rhost = remote.rsplit(":", 1)[0].strip("[]")
        ensure_loopback(rhost)
        path = _scenario_path(scenario)
        kind: Kind = "tcp" if transport.startswith("t") else "udp"
        port = local_port if local_port is not None else free_port(kind, local_ip)
        workdir = self._rundir(path.stem)
        soft = max(1, int(timeout_s))
        args = [
            self.sipp, remote,
            "-sf", str(path),
            *self._common(workdir, local_ip, port, transport),
            "-m", str(calls),
            "-r", str(rate),
            "-l", str(limit if limit is not None else max(calls, 1)),
            "-s", service,
            "-d", str(pause_ms),
            "-au", auth_user,
            "-ap", auth_pass,
            "-recv_timeout", str(recv_timeout_ms),
            "-timeout", f"{soft}s", "-timeout_error",
        ]  # fmt: skip
        if auth_uri is None and "INVITE sip:[service]@" in path.read_text(encoding="iso-8859-1"):
            auth_uri = f"{service}@{remote}"
        if auth_uri is not None:
            args += ["-auth_uri", auth_uri]
        for name, value in (keys or {}).items():
            args += ["-key", name, value]
        args += list(extra)
        cmd = ["timeout", "-k", "3", str(soft + 5), *args]
        try:
            done = subprocess.run(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=soft + 15,
                check=False,
            )
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:  # coreutils timeout failed too: report it
            rc, out, err = 124, exc.stdout or b"", exc.stderr or b""
        return SippResult(
            args=tuple(args),
            returncode=rc,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            stats=_last_stats(workdir / "stat.csv"),
            errors=_read(workdir / "errors.log"),
            messages=_read(workdir / "messages.log"),
            workdir=workdir,
        )

    def start_uas(
        self,
        scenario: str | Path = "uas.xml",
        local_ip: str = V4,
        port: int | None = None,
        transport: SippTransport = "u1",
        *,
        calls: int = 10000,
        timeout_s: float = 300.0,
        keys: Mapping[str, str] | None = None,
        ready_timeout: float = 5.0,
    ) -> SippServer:
        """Start a UAS scenario listening on local_ip:port; returns once the port is bound."""
        ensure_loopback(local_ip)
        path = _scenario_path(scenario)
        kind: Kind = "tcp" if transport.startswith("t") else "udp"
        port = port if port is not None else free_port(kind, local_ip)
        workdir = self._rundir(f"uas-{path.stem}")
        args = [
            self.sipp,
            "-sf", str(path),
            *self._common(workdir, local_ip, port, transport),
            "-m", str(calls),
            "-timeout", f"{int(timeout_s)}s",
        ]  # fmt: skip
        for name, value in (keys or {}).items():
            args += ["-key", name, value]
        cmd = ["timeout", "-k", "3", str(int(timeout_s) + 5), *args]
        with (workdir / "stdout.txt").open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = SippServer(proc, workdir, local_ip, port, kind)
        self.servers.append(server)

        def bound() -> bool:
            if proc.poll() is not None:
                raise HarnessError(
                    f"the SIPp UAS exited with {proc.returncode}:\n"
                    + _read(workdir / "stdout.txt")[-2000:]
                )
            return port_in_use(kind, local_ip, port)

        wait_for(bound, ready_timeout, f"the SIPp UAS to bind {kind} {hostport(local_ip, port)}")
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files made by trustme: a CA, a server certificate for 127.0.0.1 / ::1 / localhost
    (the daemon's), and a client certificate (for a client that offers one)."""

    ca_cert: Path
    server_cert: Path  # certificate chain
    server_key: Path = field(repr=False)
    client_cert: Path
    client_key: Path = field(repr=False)

    def server_context(self) -> ssl.SSLContext:
        """A server context with the daemon's certificate (a TLS peer standing for sipguard or,
        in front of a plain-TCP SIPp UAS, for a TLS upstream)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against our CA (hostname included)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_cert))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def make_tls_files(directory: Path) -> TlsFiles:
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="sipguard tests")
    server = ca.issue_cert("127.0.0.1", "::1", "localhost", "sipguard.test")
    client = ca.issue_cert("alice@sipguard.test", common_name="alice")
    files = TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    ca.cert_pem.write_to_path(str(files.ca_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    with files.server_cert.open("wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    client.private_key_pem.write_to_path(str(files.client_key))
    with files.client_cert.open("wb") as f:
        for blob in client.cert_chain_pems:
            f.write(blob.bytes())
    for key in (files.server_key, files.client_key):
        key.chmod(0o600)
    return files


BRIDGE_TIMEOUT = 5.0  # seconds for a bridge to start, connect and handshake, or stop


class TlsBridge:
    """Accepts plain TCP on loopback and relays each connection over TLS to a target.

    With server_context it terminates TLS on the accepting side instead (the self-test uses
    that to put a TLS hop in front of a plain-TCP SIPp UAS).

    Why: Debian's SIPp 3.6.1 is built without OpenSSL (`-t l1` fails with "To use a TLS
    transport you must compile SIPp with OpenSSL"). SIPp talks `-t t1` to the bridge; the
    bridge opens one TLS connection per TCP connection to the daemon, verifying the daemon's
    certificate against the trustme CA (hostname = the target IP), so the daemon sees a real
    TLS peer from the same loopback address. The Via transport SIPp writes stays "TCP".

    One event loop in one thread relays every connection: an SSL object must never be used
    by two threads at once. (The bridge once pumped each direction in its own thread; a read
    racing a write on the same SSLSocket could see the other's state, take it for a ragged
    EOF, read b"" and close the relay: the next answer never came, mostly under load.)
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        context: ssl.SSLContext | None,
        *,
        server_context: ssl.SSLContext | None = None,
    ) -> None:
        self.target = (ensure_loopback(target_host), target_port)
        self.context = context  # TLS towards the target (None: plain TCP)
        self.server_context = server_context  # TLS towards the accepted peer (None: plain)
        self.host = target_host
        self.handshakes = 0
        self.errors: list[str] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tls-bridge", daemon=True
        )
        self._thread.start()
        # Listening (bound and accepting) before the constructor returns.
        listening = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self._server = listening.result(BRIDGE_TIMEOUT)
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def remote(self) -> str:
        return hostport(self.host, self.port)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, self.host, 0, family=_family(self.host))

    async def _relay(self, plain_r: asyncio.StreamReader, plain_w: asyncio.StreamWriter) -> None:
        """One accepted connection: both handshakes, then both directions until either ends."""
        self._writers.append(plain_w)
        host, port = self.target
        try:
            async with asyncio.timeout(BRIDGE_TIMEOUT):
                if self.server_context is not None:
                    await plain_w.start_tls(self.server_context)
                secure_r, secure_w = await asyncio.open_connection(
                    host, port, ssl=self.context, server_hostname=host if self.context else None
                )
        except (OSError, ssl.SSLError) as exc:  # TimeoutError included
            if not self._closing:
                self.errors.append(f"relay to {self.target}: {exc}")
            plain_w.close()
            return
        self._writers.append(secure_w)
        self.handshakes += 1
        await asyncio.gather(self._pump(plain_r, secure_w), self._pump(secure_r, plain_w))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy until EOF, then close the other side (whose own pump then sees EOF too)."""
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, ssl.SSLError) as exc:
            if not self._closing:
                self.errors.append(f"relay: {exc!r}")
        finally:
            dst.close()

    async def _shutdown(self) -> None:
        self._closing = True
        self._server.close()
        for writer in self._writers:
            writer.close()
        # Closed transports end every pump with EOF (no cancel: asyncio 3.11's stream callback
        # would log the CancelledError of a relay task as an error).
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        if tasks:
            await asyncio.wait(tasks, timeout=BRIDGE_TIMEOUT)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):  # best effort: the loop stops below regardless
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(BRIDGE_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(BRIDGE_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> TlsBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
