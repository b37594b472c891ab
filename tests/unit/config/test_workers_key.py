"""The `workers` key (issue 15): `auto`, an integer, the default 1, and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipguard.config import load_settings_with_warnings
from sipguard.config.workers import MAX_WORKERS, cpu_count
from sipguard.errors import ConfigError

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BASE = """\
listen: [udp://127.0.0.1:5060, tcp://127.0.0.1:5060]
upstream: [sip:127.0.0.1:5070]
auth: {realm: sipguard.test}
trunks:
  - name: demo
    whitelist: [127.0.0.1]
"""


def load(tmp_path: Path, text: str) -> int:
    path = tmp_path / "sipguard.yaml"
    path.write_text(text)
    return load_settings_with_warnings(str(path), environ={}, now=NOW)[0].workers


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "sipguard.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings_with_warnings(str(path), environ={}, now=NOW)
    return exc.value.problems


def test_default_is_one_process(tmp_path: Path) -> None:
    assert load(tmp_path, BASE) == 1


def test_a_number_and_auto(tmp_path: Path) -> None:
    assert load(tmp_path, BASE + "workers: 3\n") == 3
    assert load(tmp_path, BASE + "workers: auto\n") == cpu_count() >= 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "0 is out of range 1..256"),
        (str(MAX_WORKERS + 1), "is out of range 1..256"),
        ("many", "'many': expected `auto` or an integer 1..256"),
        ("2.5", "expected an integer"),
        ("true", "expected an integer"),
    ],
)
def test_bad_values_are_refused_with_the_key(tmp_path: Path, value: str, expected: str) -> None:
    found = problems(tmp_path, BASE + f"workers: {value}\n")
    assert len(found) == 1 and ": workers: " in found[0] and expected in found[0], found
