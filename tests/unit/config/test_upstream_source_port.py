"""The `upstream_source_port` key: the fixed port of the upstream-facing UDP sockets, one per
worker (base + index); absent, valid, out of range (alone and with `workers`), clashing with a
UDP listener, and the warnings the config alone can give."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipguard.config import load_settings_with_warnings
from sipguard.errors import ConfigError
from sipguard.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TRUNKS = """\
auth: {realm: sipguard.test, secret_env: NONCE_KEY}
trunks:
  - name: demo
    whitelist: [127.0.0.1]
"""
BASE = "listen: [udp://127.0.0.1:5060, tcp://127.0.0.1:5060]\nupstream: [sip:127.0.0.1:5070]\n"
KEY = ": upstream_source_port: "


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sipguard.yaml"
    path.write_text(text + TRUNKS)
    return str(path)


def load(tmp_path: Path, text: str) -> tuple[Settings, list[str]]:
    return load_settings_with_warnings(
        write(tmp_path, text), environ={"NONCE_KEY": "0123456789abcdef0123456789abcdef"}, now=NOW
    )


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    return exc.value.problems


def test_absent_is_an_ephemeral_port_as_before(tmp_path: Path) -> None:
    settings, warnings = load(tmp_path, BASE)
    assert settings.upstream_source_port is None and warnings == []


@pytest.mark.parametrize("value", [1, 5080, 32767, 65535])
def test_a_port_is_kept(tmp_path: Path, value: int) -> None:
    settings, warnings = load(tmp_path, BASE + f"upstream_source_port: {value}\n")
    assert settings.upstream_source_port == value and warnings == []


def test_one_port_per_worker_fits_below_65536(tmp_path: Path) -> None:
    settings, _ = load(tmp_path, BASE + "workers: 4\nupstream_source_port: 5080\n")
    assert (settings.workers, settings.upstream_source_port) == (4, 5080)
    found = problems(tmp_path, BASE + "workers: 4\nupstream_source_port: 65533\n")
    path = str(tmp_path / "sipguard.yaml")
    assert found == [
        f"{path}: upstream_source_port: 65533: worker 3 of 4 would bind 65536, above 65535; "
        "give at most 65532"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "0 is out of range 1..65535"),
        ("65536", "65536 is out of range 1..65535"),
        ("-5", "-5 is out of range 1..65535"),
        ("'5080'", "expected an integer, got a string"),
        ("50.8", "expected an integer"),
        ("true", "expected an integer"),
        ("[5080]", "expected an integer"),
    ],
)
def test_bad_values_are_refused_with_the_key(tmp_path: Path, value: str, expected: str) -> None:
    found = problems(tmp_path, BASE + f"upstream_source_port: {value}\n")
    assert len(found) == 1 and KEY in found[0] and expected in found[0], found
    assert found[0].startswith(str(tmp_path / "sipguard.yaml"))


def test_a_wildcard_udp_listener_on_a_port_of_the_range_clashes(tmp_path: Path) -> None:
    text = (
        "listen: [udp://0.0.0.0:5081, tcp://0.0.0.0:5080]\n"
        "upstream: [sip:127.0.0.1:5070]\nworkers: 2\nupstream_source_port: 5080\n"
    )
    found = problems(tmp_path, text)
    path = str(tmp_path / "sipguard.yaml")
    assert found == [
        f"{path}: upstream_source_port: 5080..5081 (one per worker): listen[0] "
        "'udp://0.0.0.0:5081' uses port 5081 on every address; give ports no UDP listener uses"
    ]


def test_a_udp_listener_on_the_port_of_one_address_is_warned_about(tmp_path: Path) -> None:
    """The config cannot tell which local address faces the upstream (the routing table does,
    at start): a listener on one address and the same port is a clash only if it is that one."""
    settings, warnings = load(tmp_path, BASE + "upstream_source_port: 5060\n")
    assert settings.upstream_source_port == 5060
    path = str(tmp_path / "sipguard.yaml")
    assert warnings == [
        f"{path}: upstream_source_port: 5060: listen[0] 'udp://127.0.0.1:5060' uses port 5060: "
        "if 127.0.0.1 is the address toward the upstream, sipguard cannot start; give ports no "
        "UDP listener uses"
    ]


@pytest.mark.parametrize(
    "text",
    [
        # a TCP listener on the port: the upstream-facing socket is UDP
        "listen: [tcp://0.0.0.0:5080]\nupstream: [sip:127.0.0.1:5070]\n",
        # a UDP listener of the other family: the socket is IPv4, the listener IPv6-only
        "listen: ['udp://[::]:5080']\nupstream: [sip:127.0.0.1:5070]\n",
        # below the range, above it
        "listen: [udp://0.0.0.0:5079, udp://0.0.0.0:5082]\n"
        "upstream: [sip:127.0.0.1:5070]\nworkers: 2\n",
    ],
)
def test_no_clash_across_transports_families_or_outside_the_range(
    tmp_path: Path, text: str
) -> None:
    settings, warnings = load(tmp_path, text + "upstream_source_port: 5080\n")
    assert settings.upstream_source_port == 5080
    assert not [w for w in warnings if KEY in w], warnings


def test_without_a_udp_upstream_the_key_is_warned_about(tmp_path: Path) -> None:
    text = "listen: [udp://127.0.0.1:5060]\nupstream: ['sip:127.0.0.1:5070;transport=tcp']\n"
    _, warnings = load(tmp_path, text + "upstream_source_port: 5080\n")
    path = str(tmp_path / "sipguard.yaml")
    assert warnings == [
        f"{path}: upstream_source_port: no UDP upstream: sipguard opens no upstream-facing UDP "
        "socket"
    ]


def test_ports_among_the_kernels_ephemeral_ones_are_warned_about(tmp_path: Path) -> None:
    _, warnings = load(tmp_path, BASE + "workers: 2\nupstream_source_port: 32767\n")
    assert len(warnings) == 1 and KEY in warnings[0], warnings
    assert "32767..32768 (one per worker) overlaps the kernel's ephemeral ports" in warnings[0]
