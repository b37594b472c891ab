"""`sipguard admin ...` against a live admin listener (in this test's loop; the command runs in a
worker thread, as it would in its own process), and its exit codes when it cannot work."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sipguard.cli import main
from tests.unit.admin.conftest import TOKEN, Harness


def config_for(tmp_path: Path, port: int, token: bytes = TOKEN) -> str:
    (tmp_path / "admin.token").write_bytes(token + b"\n")
    (tmp_path / "admin.token").chmod(0o600)
    path = tmp_path / "sipguard.yaml"
    path.write_text(f"admin: {{listen: '127.0.0.1:{port}', token_file: admin.token}}\n")
    return str(path)


async def run(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_bans_unban_ban(
    admin: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, admin.listener.address[1])
    admin.core.guard.ban("203.0.113.7", time.time(), 600)
    assert await run("admin", "--config", config, "bans") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ADDRESS", "SINCE", "UNTIL", "FAILURES"]
    assert out.splitlines()[1].startswith("203.0.113.7 ")
    assert await run("admin", "-c", config, "unban", "203.0.113.7") == 0
    assert capsys.readouterr().out == "unbanned 203.0.113.7\n"
    assert not admin.core.guard.is_banned("203.0.113.7", time.time())
    assert await run("admin", "-c", config, "unban", "203.0.113.7") == 1
    assert "not banned" in capsys.readouterr().err
    assert await run("admin", "-c", config, "bans") == 0
    assert capsys.readouterr().out == "no bans\n"
    assert await run("admin", "-c", config, "ban", "203.0.113.8", "--duration", "60") == 0
    assert capsys.readouterr().out.startswith("banned 203.0.113.8 until ")
    assert admin.core.guard.is_banned("203.0.113.8", time.time() + 55)
    assert await run("admin", "-c", config, "ban", "not-an-ip") == 64
    assert "is not an IP address" in capsys.readouterr().err


async def test_reload_and_status(
    admin: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, admin.listener.address[1])
    assert await run("admin", "-c", config, "reload") == 0
    assert capsys.readouterr().out == "reload applied: /etc/sipguard/sipguard.yaml\n"
    admin.server.problems = ["x.yaml: trunks[0].name: missing"]
    assert await run("admin", "-c", config, "reload") == 78
    err = capsys.readouterr().err
    assert "reload refused, the running configuration is kept" in err
    assert "x.yaml: trunks[0].name: missing" in err
    assert await run("admin", "-c", config, "status") == 0
    out = capsys.readouterr().out
    assert "workers: 1" in out and "sha256=" + "ab" * 32 in out
    assert await run("admin", "-c", config, "--json", "status") == 0
    assert '"version"' in capsys.readouterr().out


async def test_wrong_token_exits_77(
    admin: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, admin.listener.address[1], token=b"w" * 32)
    admin.core.guard.ban("203.0.113.7", time.time(), 600)
    assert await run("admin", "-c", config, "unban", "203.0.113.7") == 77
    assert "refused the token" in capsys.readouterr().err
    assert admin.core.guard.is_banned("203.0.113.7", time.time())


def test_unreachable_api_exits_69(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        assert main(["admin", "-c", config_for(tmp_path, port), "status"]) == 69
    assert "cannot reach the admin API at http://127.0.0.1:" in capsys.readouterr().err


def test_config_without_admin_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sipguard.yaml"
    path.write_text("listen: [udp://127.0.0.1:5060]\n")
    assert main(["admin", "-c", str(path), "bans"]) == 78
    assert "the admin API is off in this file" in capsys.readouterr().err
    assert main(["admin", "-c", str(tmp_path / "missing.yaml"), "bans"]) == 78
    assert "cannot read" in capsys.readouterr().err
