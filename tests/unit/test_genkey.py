"""`sipguard gen-key FILE` and `check-config --config FILE` as operators run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sipguard.cli import main
from sipguard.config import load_settings_with_warnings
from sipguard.exits import EX_CANTCREAT, EX_OK

ROOT = Path(__file__).resolve().parents[2]


def sipguard(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipguard", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_key_file_is_hex_private_and_fresh(tmp_path: Path) -> None:
    old = os.umask(0)  # the mode must not depend on the umask
    try:
        result = sipguard("gen-key", str(tmp_path / "a.key"))
    finally:
        os.umask(old)
    assert result.returncode == EX_OK, result.stderr
    data = (tmp_path / "a.key").read_bytes()
    assert re.fullmatch(rb"[0-9a-f]{64}\n", data)
    assert (tmp_path / "a.key").stat().st_mode & 0o777 == 0o600
    assert data.strip().decode() not in result.stdout + result.stderr
    assert main(["gen-key", str(tmp_path / "b.key")]) == EX_OK
    assert (tmp_path / "b.key").read_bytes() != data


def test_generated_key_is_accepted_without_warnings(tmp_path: Path) -> None:
    assert main(["gen-key", str(tmp_path / "nonce.key")]) == EX_OK
    config = tmp_path / "sipguard.yaml"
    config.write_text(
        "listen: [udp://127.0.0.1:5060]\nupstream: [sip:127.0.0.1:5070]\n"
        "auth: {realm: r, secret_file: nonce.key}\ntrunks: [{name: t, whitelist: [127.0.0.1]}]\n"
    )
    settings, warnings = load_settings_with_warnings(str(config), environ={})
    assert warnings == []
    assert settings.auth.secret == (tmp_path / "nonce.key").read_bytes().strip()
    assert len(settings.auth.secret or b"") == 64


def test_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "nonce.key"
    key.write_bytes(b"the old key, still in use\n")
    assert main(["gen-key", str(key)]) == EX_CANTCREAT
    assert key.read_bytes() == b"the old key, still in use\n"
    assert "refusing to overwrite" in capsys.readouterr().err


def test_never_follows_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "target")  # dangling: O_CREAT would create it
    assert main(["gen-key", str(tmp_path / "link")]) == EX_CANTCREAT
    assert not (tmp_path / "target").exists()


def test_unwritable_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen-key", str(tmp_path / "no" / "such" / "dir.key")]) == EX_CANTCREAT
    assert "No such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["check-config", "config/test-good.yaml"],
        ["check-config", "--config", "config/test-good.yaml"],
        ["check-config", "-c", "config/test-good.yaml"],
        ["check-config", "config/test-good.yaml", "--config", "config/test-good.yaml"],
    ],
)
def test_check_config_takes_the_file_either_way(args: list[str]) -> None:
    result = sipguard(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config/test-good.yaml: OK: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check-config"], "the config file is missing (FILE or --config FILE)"),
        (["check-config", "a.yaml", "-c", "b.yaml"], "give the config file once"),
    ],
)
def test_check_config_usage_errors(args: list[str], message: str) -> None:
    result = sipguard(*args)
    assert result.returncode == 2  # argparse's usage exit, as for every other usage error
    assert message in result.stderr
