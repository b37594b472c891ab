"""The systemd unit: the directives the operator guide promises are there, `systemd-analyze verify`
accepts it (when the tool exists), and MemoryDenyWriteExecute= does not break the runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sipguard.exits import EX_CONFIG
from sipguard.notify import STOP_MARGIN
from sipguard.settings import Limits

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "sipguard.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd.syntax(7): sections, `Key=value` (keys may repeat), `#`/`;` comments,
    backslash continuation."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


README = ROOT / "README.md"
# Where the README's install puts the command: the unit is copied as is.
COMMAND = "/opt/sipguard/.venv/bin/sipguard"


def readme_install() -> str:
    """The shell commands of README "Install" (its fenced blocks)."""
    section = README.read_text().split("\n## Install\n")[1].split("\n## ")[0]
    return "\n".join(section.split("```")[1::2])


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit: dict[str, dict[str, list[str]]], key: str, section: str = "Service") -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def test_service_lifecycle(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit, "Type") == "notify"
    assert one(unit, "ExecStart") == f"{COMMAND} run --config /etc/sipguard/sipguard.yaml"
    assert one(unit, "ExecStartPre") == f"{COMMAND} check-config /etc/sipguard/sipguard.yaml"
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "RestartPreventExitStatus") == str(EX_CONFIG)  # sipguard.exits
    assert one(unit, "TimeoutStopSec")
    assert one(unit, "WantedBy", "Install") == "multi-user.target"


def test_the_unit_runs_what_the_readme_installs(unit: dict[str, dict[str, list[str]]]) -> None:
    """Copied as is after the README's install, the unit finds its command and its guide."""
    install = readme_install()
    venv = COMMAND.removesuffix("/bin/sipguard")
    assert f"python3 -m venv {venv}\n" in install
    assert f"{venv}/bin/pip install " in install
    assert "install -m 0644 systemd/sipguard.service /etc/systemd/system/" in install
    for key in ("ExecStart", "ExecStartPre"):
        assert one(unit, key).split()[0] == COMMAND, key
    documents = one(unit, "Documentation", "Unit").split()
    assert documents
    for uri in documents:
        assert uri.startswith("file://"), uri
        assert f" {uri.removeprefix('file://')} " in install.replace("\n", " \n"), uri


def test_stop_timeout_covers_the_default_grace(unit: dict[str, dict[str, list[str]]]) -> None:
    """TimeoutStopSec= is a floor: the daemon extends it to its own grace (observer.stopping)."""
    timeout = one(unit, "TimeoutStopSec")
    assert timeout.endswith("s")
    assert float(timeout.removesuffix("s")) >= Limits().shutdown_grace + STOP_MARGIN


def test_sandbox(unit: dict[str, dict[str, list[str]]]) -> None:
    expected = {
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "LimitNOFILE": "65536",
        "MemoryMax": "1G",
        "ConfigurationDirectory": "sipguard",
        "StateDirectory": "sipguard",
    }
    for key, value in expected.items():
        assert one(unit, key) == value, key
    assert "@system-service" in unit["Service"]["SystemCallFilter"]
    # a static user so the config (it holds passwords) can be root:sipguard 0640
    assert one(unit, "User") == "sipguard"
    assert "DynamicUser" not in unit["Service"]


def test_the_reload_signal_is_the_one_the_daemon_handles(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    assert "-HUP" in one(unit, "ExecReload")
    assert "KillSignal" not in unit["Service"] or one(unit, "KillSignal") == "SIGTERM"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip(
            "systemd-analyze is not installed here (apt-get install systemd); "
            "the directives are still checked by the other tests"
        )
    # verify insists that ExecStart= binaries exist: point them at this checkout's entry point
    entry = Path(sys.executable).with_name("sipguard")
    if not entry.exists():
        pytest.skip(f"{entry} is missing: install the package (pip install -e .) to verify")
    copy = tmp_path / "sipguard.service"
    copy.write_text(UNIT.read_text().replace(COMMAND, str(entry)))
    result = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [line for line in result.stderr.splitlines() if "sipguard.service" in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []  # unknown keys and bad values are only warnings: refuse them too


MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print("unsupported"); sys.exit(0)
    try:  # the guard is on: W+X memory is refused from now on
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        print("not enforced"); sys.exit(0)
    except OSError:
        pass
    import asyncio, hashlib, io, ssl
    import uvloop
    from sipguard.logs import configure_logging
    from sipguard.metrics import Metrics, serve_metrics
    from sipguard.observer import Observer
    from sipguard.proxy.actions import Address, Cause, Drop, Transport

    async def main():
        metrics = Metrics()
        observer = Observer(metrics, configure_logging("info", "json", io.BytesIO()), None)
        observer.decision(Drop(Cause.ACL_DENIED), Address(Transport.UDP, "127.0.0.1", 1), 1e-5)
        loop = asyncio.get_running_loop()
        got = loop.create_future()

        class Echo(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        transport.sendto(b"OPTIONS", ("127.0.0.1", port))
        assert await asyncio.wait_for(got, 5) == b"OPTIONS"
        transport.close()
        server = await serve_metrics(metrics, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"GET /metrics HTTP/1.1\\r\\n\\r\\n")
        assert b"sipguard_acl_denied_total" in await asyncio.wait_for(reader.read(), 5)
        writer.close()
        server.close()
        ssl.create_default_context()
        hashlib.sha256(b"x").hexdigest()
        hashlib.new("sha512_256", b"x").hexdigest()

    uvloop.run(main())
    print("ok")
    """
)


def test_memory_deny_write_execute_leaves_the_runtime_working() -> None:
    """MemoryDenyWriteExecute=yes in the unit: the same W^X rule (prctl PR_SET_MDWE, Linux 6.3+)
    applied to a Python running uvloop, ssl, hashlib, orjson and our observer."""
    pytest.importorskip("uvloop")
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    verdict = result.stdout.strip().splitlines()[-1]
    if verdict in ("unsupported", "not enforced"):
        pytest.skip(f"PR_SET_MDWE is {verdict} on this kernel: cannot emulate the directive")
    assert verdict == "ok"
