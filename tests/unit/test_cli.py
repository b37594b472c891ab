"""The command line: help, version and usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sipguard import __version__
from sipguard.cli import main
from sipguard.exits import EX_USAGE


def test_module_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sipguard", "--help"], capture_output=True, text=True, check=True
    )
    assert "check-config" in out.stdout
    assert "hash-password" in out.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EX_USAGE
    assert "usage" in capsys.readouterr().out
