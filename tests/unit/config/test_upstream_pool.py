"""The upstream pool's config (issue 14): upstream entries as strings or mappings, the
`upstream_health` section, the client-transaction limit; backwards compatible."""

from __future__ import annotations

from pathlib import Path

from sipguard.config import load_settings_with_warnings
from sipguard.settings import NO_PROBING, Settings, Upstream, UpstreamHealth
from tests.unit.config.test_loader import BASE, NOW


def _load(tmp_path: Path, text: str) -> tuple[Settings, list[str]]:
    path = tmp_path / "sipguard.yaml"
    path.write_text(text)
    return load_settings_with_warnings(str(path), environ={}, now=NOW)


def test_plain_string_config_behaves_as_before(tmp_path: Path) -> None:
    settings, _ = _load(tmp_path, BASE)
    assert settings.upstream == (
        Upstream("sip:127.0.0.1:5070", "udp", "127.0.0.1", 5070, priority=1, weight=1),
    )
    assert settings.upstream_health == NO_PROBING
    assert NO_PROBING.probe_interval == 0


def test_mixed_strings_and_mappings(tmp_path: Path) -> None:
    text = BASE.replace(
        "upstream: [sip:127.0.0.1:5070]",
        "upstream:\n"
        "  - sip:10.0.0.11:5060;transport=udp\n"
        "  - uri: sip:10.0.0.12:5060;transport=udp\n"
        "    priority: 1\n"
        "    weight: 2\n"
        "  - uri: sip:10.0.1.11:5060;transport=tcp\n"
        "    priority: 2\n",
    )
    settings, _ = _load(tmp_path, text)
    assert [(u.host, u.transport, u.priority, u.weight) for u in settings.upstream] == [
        ("10.0.0.11", "udp", 1, 1),
        ("10.0.0.12", "udp", 1, 2),
        ("10.0.1.11", "tcp", 2, 1),
    ]


def test_health_section_defaults_turn_probing_on(tmp_path: Path) -> None:
    settings, _ = _load(tmp_path, BASE + "upstream_health: {}\n")
    assert settings.upstream_health == UpstreamHealth()
    assert UpstreamHealth().probe_interval == 5.0


def test_health_section_values(tmp_path: Path) -> None:
    text = BASE + (
        "upstream_health:\n  probe_interval: 0.5\n  probe_timeout: 0.25\n  down_after: 4\n"
        "  up_after: 1\n  failover_timeout: 1.5\nlimits:\n  client_transaction_table_size: 77\n"
    )
    settings, _ = _load(tmp_path, text)
    assert settings.upstream_health == UpstreamHealth(0.5, 0.25, 4, 1, 1.5)
    assert settings.limits.client_transaction_table_size == 77


def test_example_pool_keys_load_when_uncommented(tmp_path: Path) -> None:
    """The commented pool keys of config/sipguard.example.yaml are valid as written."""
    example = (Path(__file__).resolve().parents[3] / "config" / "sipguard.example.yaml").read_text()
    lines = example.splitlines()
    start = next(i for i, line in enumerate(lines) if "# - uri: sip:127.0.0.1:5080" in line)
    end = next(i for i, line in enumerate(lines) if "failover_timeout:" in line)
    for i in range(start, end + 1):
        lines[i] = lines[i].replace("# ", "", 1)
    settings, _ = _load(tmp_path, "\n".join(lines) + "\n")
    assert [u.port for u in settings.upstream] == [5070, 5080]
    assert settings.upstream_health == UpstreamHealth()
