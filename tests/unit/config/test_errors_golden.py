"""Golden test: every error and warning the config loader gives, byte for byte.

`errors_golden.yaml` holds many configs (bad ones for every error branch the loader has, and a
few good ones for its warnings) with the exact messages the loader produced when the file was
frozen. A refactoring of `sipguard.config` must leave every message unchanged; an intended change
of wording edits the data file in the same commit (and says so).

Each case is loaded from a fresh folder holding the small files the configs name (secret and
password files, a certificate placeholder, a directory); the folder's path appears in messages
as `{dir}`. The files are mode 0600, as the README asks for secret files.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sipguard.config import load_settings_with_warnings
from sipguard.errors import ConfigError

GOLDEN = Path(__file__).with_name("errors_golden.yaml")
NOW = datetime(2026, 6, 1, tzinfo=UTC)
ENVIRON = {
    "EMPTY": "",
    "SHORT": "short",
    "GOOD": "0123456789abcdef0123456789abcdef",
    "PW": "pw",
}
FILES = {
    "short.key": b"0123456789\n",
    "good.key": b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    "big.key": b"k" * 65537,
    "empty.pw": b"\n",
    "latin1.pw": b"caf\xe9\n",
    "good.pw": b"s3cret\n",
    "cert.pem": b"placeholder\n",
    "key.pem": b"placeholder\n",
}


def make_folder(folder: Path) -> None:
    """The files and the directory the golden configs refer to, mode 0600."""
    for name, data in FILES.items():
        path = folder / name
        path.write_bytes(data)
        path.chmod(0o600)
    (folder / "adir").mkdir()


def outcome(case: dict[str, Any], folder: Path) -> dict[str, list[str]]:
    """What loading the case gives: {'errors': [...]} or {'warnings': [...]}, with the folder's
    path written as {dir}."""
    path = folder / "sipguard.yaml"
    if "config" in case:
        path.write_bytes(case["config"].encode(case.get("encoding", "utf-8")))
        path.chmod(0o600)
    try:
        _, warnings = load_settings_with_warnings(str(path), environ=ENVIRON, now=NOW)
    except ConfigError as exc:
        result = {"errors": exc.problems}
    else:
        result = {"warnings": warnings}
    return {
        kind: [message.replace(str(folder), "{dir}") for message in messages]
        for kind, messages in result.items()
    }


def load_cases() -> dict[str, dict[str, Any]]:
    with GOLDEN.open(encoding="utf-8") as handle:
        cases = yaml.safe_load(handle)
    assert isinstance(cases, dict) and len(cases) > 200, "the golden data file is incomplete"
    return cases


CASES = load_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_messages_are_unchanged(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    make_folder(tmp_path)
    expected = {kind: case[kind] for kind in ("errors", "warnings") if kind in case}
    assert outcome(case, tmp_path) == expected


def test_error_cases_each_give_an_error() -> None:
    """The data file is mostly bad configs, and each bad one was refused when frozen."""
    refused = [name for name, case in CASES.items() if "errors" in case]
    assert len(refused) > 180
    assert all(CASES[name]["errors"] for name in refused)


def test_folder_is_private(tmp_path: Path) -> None:
    make_folder(tmp_path)
    assert {os.stat(tmp_path / name).st_mode & 0o777 for name in FILES} == {0o600}
