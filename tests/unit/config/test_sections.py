"""The extension points of the config package: the table of sections and the trunk sub-keys."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipguard.config import SECTIONS, load_settings_with_warnings
from sipguard.config import auth as auth_module
from sipguard.config import load as load_module
from sipguard.config.load import Section
from sipguard.config.reader import Reader
from sipguard.errors import ConfigError
from sipguard.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BASE = """\
listen: [udp://127.0.0.1:5060]
upstream: [sip:127.0.0.1:5070]
auth: {realm: sipguard.test}
trunks:
  - name: demo
    whitelist: [127.0.0.1]
"""


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_settings_with_warnings(str(path), environ={}, now=NOW)
    return exc.value.problems


def test_sections_make_settings_fields() -> None:
    """Each section makes the `Settings` field of its name; a field no section reads yet (one
    being added in another branch) must have a default, or loading could not build `Settings`."""
    fields = {f.name: f for f in dataclasses.fields(Settings) if f.name != "source"}
    keys = [section.key for section in SECTIONS]
    assert len(set(keys)) == len(keys)
    assert set(keys) <= set(fields)
    for name in set(fields) - set(keys):
        field = fields[name]
        assert field.default is not dataclasses.MISSING or (
            field.default_factory is not dataclasses.MISSING
        ), name


def test_a_new_section_is_one_table_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A section added to the table is a known key, is read with its key and the sections
    before it, and its problems are reported like the others'."""
    seen: dict[str, object] = {}

    def read_extra(r: Reader, value: object, done: Mapping[str, object]) -> None:
        seen.update(value=value, auth=done.get("auth"))
        r.error("extra.size", "is wrong")

    monkeypatch.setattr(load_module, "SECTIONS", (*SECTIONS, Section("extra", read_extra)))
    path = tmp_path / "sipguard.yaml"
    path.write_text(BASE + "extra: {size: 3}\n")
    assert problems_of(path) == [f"{path}: extra.size: is wrong"]
    assert seen["value"] == {"size": 3}
    assert getattr(seen["auth"], "realm", None) == "sipguard.test"
    path.write_text(BASE + "extr: 1\n")
    assert f"{path}: extr: unknown key; did you mean 'extra'?" in problems_of(path)[0]


def test_a_new_trunk_key_is_one_table_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_colour(r: Reader, value: object, key: str) -> None:
        r.error(key, f"{value!r} is not a colour")

    monkeypatch.setitem(auth_module.TRUNK_KEYS, "colour", read_colour)
    path = tmp_path / "sipguard.yaml"
    path.write_text(BASE + textwrap.indent("colour: 7\n", "    "))
    assert problems_of(path) == [f"{path}: trunks[0].colour: 7 is not a colour"]
    path.write_text(BASE + textwrap.indent("color: 7\n", "    "))
    problem = problems_of(path)[0]
    assert problem.startswith(
        f"{path}: trunks[0].color: unknown key; did you mean 'colour'? (known: name, whitelist, "
        "credentials, algorithms, allow_open, "
    )
    assert problem.endswith(", colour)")  # the table's own entries (attributes...) in between


def test_state_section(tmp_path: Path) -> None:
    path = tmp_path / "state.yaml"
    base = (Path(__file__).parents[3] / "config" / "sipguard.example.yaml").read_text()
    good = base.replace("backend: memory ", "backend: redis  ").replace(
        "on_error: local ", "on_error: refuse"
    )
    path.write_text(good)
    settings, _ = load_settings_with_warnings(str(path), environ={}, now=NOW)
    assert settings.state.backend == "redis" and settings.state.on_error == "refuse"
    assert settings.state.redis_url == "redis://127.0.0.1:6379/0"
    bad = base.replace("redis://127.0.0.1:6379/0", "http://:hunter2@127.0.0.1/0").replace(
        "backend: memory ", "backend: mysql  "
    )
    path.write_text(bad)
    problems = problems_of(path)
    assert any("state.backend" in p and "memory" in p for p in problems), problems
    assert any("state.redis_url" in p and "rediss://" in p for p in problems), problems
    assert not any("hunter2" in p for p in problems)
