"""Run the real SIPVicious tools (svmap, svwar, svcrack; PyPI `sipvicious` 0.3.x) against loopback.

Owns: building the command lines, a hard timeout per run (the child is killed by PID when it
expires), and parsing what the tools print into values the attack tests can assert on. Facts
about the tools that these helpers rely on are in docs/notes-sipvicious.md.

Never: targets anything but a loopback address (127.0.0.0/8, ::1), or runs without a timeout.

What the tools print (0.3.8): the result table goes to stdout, logging to stderr.
  svmap:   | SIP Device | User Agent |   rows `127.0.0.1:5060 | <Server or User-Agent>`
  svwar:   | Extension | Authentication |   rows `100 | reqauth` (401/403/407), `noauth` (200),
           `weird` (any other final answer that differs from the one for a random extension)
  svcrack: | Extension | Password |   row `100 | secret`; with -v also the log line
           `The password for 100 is secret`
Exit codes: 0 nothing found, 40 something found, 30 network trouble (no answer, packets lost),
20 internal error, 10 usage error.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Hard-coded by sipvicious.libs.svhelper.makeRequest (useragent='friendly-scanner'); no flag
# changes it. `-c/--enablecompact` omits the User-Agent header altogether.
SCANNER_USER_AGENT = "friendly-scanner"
# svmap's From display name (`--fromname` changes it): From: "sipvicious"<sip:100@1.1.1.1>
SVMAP_FROM_NAME = "sipvicious"
# svwar logs this and stops when a random (surely unknown) extension is challenged, as sipguard
# challenges every user it has not authenticated (no enumeration, SECURITY-CASES 26).
SVWAR_AUTH_FOR_UNKNOWN = "replied with an authentication request for an unknown extension"

DEFAULT_TIMEOUT = 10.0
# Longest blocking wait inside a tool: long enough for a loopback answer, short enough that the
# tools' fixed 3 s / 10 s waits do not dominate a test.
DEFAULT_MAX_SOCKET_TIMEOUT = 1.5

_TABLE_ROW = re.compile(r"^\|(.*)\|\s*$")
_PASSWORD_LOG = re.compile(r"The password for (\S+) is (.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One finished (or killed) run of a tool."""

    argv: tuple[str, ...]
    returncode: int | None  # None when the hard timeout killed it
    stdout: str
    stderr: str
    duration: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


@dataclass(frozen=True, slots=True)
class SvmapResult:
    run: ToolRun
    devices: dict[str, str] = field(default_factory=dict)  # "ip:port" -> User-Agent/Server


@dataclass(frozen=True, slots=True)
class SvwarResult:
    run: ToolRun
    extensions: dict[str, str] = field(default_factory=dict)  # ext -> reqauth|noauth|weird

    @property
    def refused_unknown_check(self) -> bool:
        """svwar stopped because a random extension was challenged: nothing to enumerate."""
        return SVWAR_AUTH_FOR_UNKNOWN in self.run.stderr


@dataclass(frozen=True, slots=True)
class SvcrackResult:
    run: ToolRun
    passwords: dict[str, str] = field(default_factory=dict)  # extension -> cracked password

    @property
    def password(self) -> str | None:
        return next(iter(self.passwords.values()), None)


def _check_loopback(*hosts: str) -> None:
    for host in hosts:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"sipvicious helpers only target loopback, not {host!r}")


# The tools run under this shim (`python -c _SHIM TOOL ARGS...`), which is the console script
# plus two patches of the socket module, both set through the environment:
#  - SV_BIND_IP: svwar and svcrack 0.3.8 parse -b/--bindingip but never pass it on and bind to
#    all interfaces, so the kernel picks the source address. The shim binds to SV_BIND_IP
#    instead, so an attack can come from 127.0.0.2 while a legitimate client uses 127.0.0.1.
#  - SV_MAX_SOCKET_TIMEOUT: caps the tools' blocking socket timeouts (svcrack waits 10 s for
#    a last answer after its final guess, svmap lingers 3 s), which bounds test runtime.
_SHIM = """
import os, runpy, socket, sys
bind_ip = os.environ.get("SV_BIND_IP") or None
max_timeout = float(os.environ.get("SV_MAX_SOCKET_TIMEOUT") or 0)
original_bind, original_settimeout = socket.socket.bind, socket.socket.settimeout
def bind(self, address):
    if bind_ip and address[0] in ("", "0.0.0.0", "::"):
        address = (bind_ip, *address[1:])
    return original_bind(self, address)
def settimeout(self, value):
    if max_timeout and value is not None and value > max_timeout:
        value = max_timeout
    return original_settimeout(self, value)
socket.socket.bind = bind
socket.socket.settimeout = settimeout
sys.argv = ["sipvicious_" + sys.argv[1], *sys.argv[2:]]
runpy.run_module("sipvicious." + sys.argv[0].removeprefix("sipvicious_"), run_name="__main__")
"""


def _tool(name: str) -> list[str]:
    return [sys.executable, "-c", _SHIM, name]


def free_udp_port(host: str = "127.0.0.1") -> int:
    """An unused UDP port on `host` (bound then released: a small race, fine on loopback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def run_tool(
    argv: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    bind_ip: str = "",
    max_socket_timeout: float = DEFAULT_MAX_SOCKET_TIMEOUT,
) -> ToolRun:
    """Run `argv`; kill it (by PID, via subprocess.run) when `timeout` seconds pass."""
    started = time.monotonic()
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONWARNINGS="ignore",
        SV_BIND_IP=bind_ip,
        SV_MAX_SOCKET_TIMEOUT=str(max_socket_timeout),
    )
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        return ToolRun(tuple(argv), None, _text(expired.stdout), _text(expired.stderr), timeout)
    return ToolRun(
        tuple(argv), done.returncode, done.stdout, done.stderr, time.monotonic() - started
    )


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def parse_table(stdout: str) -> list[tuple[str, ...]]:
    """Rows of the pptable printed by the tools, without the header row."""
    rows = [
        tuple(cell.strip() for cell in match.group(1).split("|"))
        for line in stdout.splitlines()
        if (match := _TABLE_ROW.match(line))
    ]
    return rows[1:]


def _common(source_ip: str, source_port: int | None, compact: bool, verbose: bool) -> list[str]:
    # -b: the source address (any 127.x.y.z works on Linux; svmap honours -b itself, the shim
    # does it for svwar/svcrack); -x: the address written in Via/Contact (else the tools put
    # gethostbyname(gethostname()) there); -P: the source port (the tools take the next free one
    # if it is busy).
    port = source_port or free_udp_port(source_ip)
    args = ["-b", source_ip, "-x", source_ip, "-P", str(port)]
    if compact:
        args.append("-c")  # compact header names and NO User-Agent header
    if verbose:
        args.append("-v")
    return args


def _target(host: str, port: int) -> str:
    return f"udp://[{host}]:{port}" if ":" in host else f"udp://{host}:{port}"


def run_svmap(
    host: str,
    port: int,
    *,
    method: str = "OPTIONS",
    extension: str | None = None,
    source_ip: str = "127.0.0.1",
    source_port: int | None = None,
    compact: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_socket_timeout: float = DEFAULT_MAX_SOCKET_TIMEOUT,
    extra: Iterable[str] = (),
) -> SvmapResult:
    """Probe one host:port (svmap lingers one socket timeout for late answers before exiting)."""
    _check_loopback(host, source_ip)
    argv = [*_tool("svmap"), *_common(source_ip, source_port, compact, verbose=True)]
    argv += ["-p", str(port), "-m", method]
    if extension is not None:
        argv += ["-e", extension]
    if ":" in host:
        argv.append("-6")
    argv += [*extra, host]
    run = run_tool(argv, timeout, bind_ip=source_ip, max_socket_timeout=max_socket_timeout)
    devices = {row[0]: row[1] for row in parse_table(run.stdout) if len(row) >= 2}
    return SvmapResult(run, devices)


def run_svwar(
    host: str,
    port: int,
    *,
    extensions: str | None = "100-110",
    dictionary: Sequence[str] | None = None,
    method: str = "REGISTER",
    force: bool = False,
    source_ip: str = "127.0.0.1",
    source_port: int | None = None,
    compact: bool = False,
    max_silence: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    max_socket_timeout: float = DEFAULT_MAX_SOCKET_TIMEOUT,
    extra: Iterable[str] = (),
) -> SvwarResult:
    """Enumerate extensions (a numeric range `-e`, or names given as `dictionary`).

    `max_silence` (--maximumtime) stops svwar that many seconds after the last answer, e.g. once
    it is banned; without any answer to its first probe it gives up after one socket timeout
    (3 s, capped by `max_socket_timeout`; exit 30)."""
    _check_loopback(host, source_ip)
    argv = [*_tool("svwar"), *_common(source_ip, source_port, compact, verbose=True)]
    argv += ["-m", method, "--maximumtime", str(max_silence)]
    if force:
        argv.append("--force")
    if ":" in host:
        argv.append("-6")
    with tempfile.TemporaryDirectory(prefix="svwar-") as tmp:
        if dictionary is not None:
            words = Path(tmp) / "extensions.txt"
            words.write_text("".join(f"{word}\n" for word in dictionary), encoding="utf-8")
            argv += ["-d", str(words)]
        elif extensions is not None:
            argv += ["-e", extensions]
        argv += [*extra, _target(host, port)]
        run = run_tool(argv, timeout, bind_ip=source_ip, max_socket_timeout=max_socket_timeout)
    found = {row[0]: row[1] for row in parse_table(run.stdout) if len(row) >= 2}
    return SvwarResult(run, found)


def run_svcrack(
    host: str,
    port: int,
    *,
    username: str,
    passwords: Sequence[str] | None = None,
    numeric_range: str | None = None,
    extension: str | None = None,
    source_ip: str = "127.0.0.1",
    source_port: int | None = None,
    compact: bool = False,
    max_silence: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    max_socket_timeout: float = DEFAULT_MAX_SOCKET_TIMEOUT,
    extra: Iterable[str] = (),
) -> SvcrackResult:
    """Guess `username`'s password from `passwords` (written to a `-d` file) or a numeric
    `-r` range (which svcrack starts with the username itself). One guess per challenge: each
    wrong guess is one failed authentication for the guard. svcrack blocks up to 10 s (capped by
    `max_socket_timeout`) for the answer to its first REGISTER and after its last guess; a source
    that is dropped from the start exits 30 with "no server response"."""
    _check_loopback(host, source_ip)
    if (passwords is None) == (numeric_range is None):
        raise ValueError("give exactly one of passwords or numeric_range")
    argv = [*_tool("svcrack"), *_common(source_ip, source_port, compact, verbose=True)]
    argv += ["-u", username, "--maximumtime", str(max_silence)]
    if extension is not None:
        argv += ["-e", extension]
    if ":" in host:
        argv.append("-6")
    with tempfile.TemporaryDirectory(prefix="svcrack-") as tmp:
        if passwords is not None:
            words = Path(tmp) / "passwords.txt"
            words.write_text("".join(f"{word}\n" for word in passwords), encoding="utf-8")
            argv += ["-d", str(words)]
        else:
            argv += ["-r", str(numeric_range)]
        argv += [*extra, _target(host, port)]
        run = run_tool(argv, timeout, bind_ip=source_ip, max_socket_timeout=max_socket_timeout)
    cracked = {row[0]: row[1] for row in parse_table(run.stdout) if len(row) >= 2}
    for user, password in _PASSWORD_LOG.findall(run.stderr):
        cracked.setdefault(user, password.strip())
    return SvcrackResult(run, cracked)
