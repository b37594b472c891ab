"""`trunks[].limits` and the `admin` section (issue 17): values, every refusal, the CLI's
partial read of the `admin` section, and the hash of the file that was loaded."""

# ruff: noqa: E501  (table rows: one config edit and one exact message per line)

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipguard.config import load_admin_settings, load_settings_with_warnings
from sipguard.errors import ConfigError
from sipguard.settings import TrunkLimits

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TOKEN = "0123456789abcdef0123456789abcdef"
BASE = """\
listen: [udp://127.0.0.1:5060]
upstream: [sip:127.0.0.1:5070]
auth: {realm: sipguard.test}
trunks:
  - name: acme
    whitelist: [127.0.0.1]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return tmp_path


def load(folder: Path, text: str) -> tuple[object, list[str]]:
    """Settings and the warnings about anything but the nonce key (BASE has none)."""
    path = folder / "sipguard.yaml"
    path.write_text(text)
    settings, warnings = load_settings_with_warnings(str(path), environ={}, now=NOW)
    return settings, [w for w in warnings if "secret_file" not in w]


def problems(folder: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(folder, text)
    prefix = f"{folder}/sipguard.yaml: "
    return [p.removeprefix(prefix) for p in exc.value.problems]


def test_trunk_limits_values(folder: Path) -> None:
    settings, warnings = load(
        folder,
        BASE + "    limits: {calls_per_second: 20, concurrent_calls: 100,"
        " registrations_per_second: 2.5, max_call_duration: 14400}\n"
        + "  - name: free\n    whitelist: [127.0.0.2]\n",
    )
    acme, free = settings.trunks  # type: ignore[attr-defined]
    assert acme.limits == TrunkLimits(20.0, 100, 2.5, 14400.0)
    assert free.limits == TrunkLimits()  # nothing limited
    assert warnings == []


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (
            "{calls_per_second: 0}",
            "trunks[0].limits.calls_per_second: 0 is out of range: more than 0, at most 100000",
        ),
        (
            "{calls_per_second: '20'}",
            "trunks[0].limits.calls_per_second: expected a number per second, got a string",
        ),
        (
            "{registrations_per_second: true}",
            "trunks[0].limits.registrations_per_second: expected a number per second, got true (YAML reads unquoted yes/no/on/off/true/false as booleans)",
        ),
        (
            "{concurrent_calls: -1}",
            "trunks[0].limits.concurrent_calls: -1 is out of range 0..10000000",
        ),
        (
            "{concurrent_calls: 2.5}",
            "trunks[0].limits.concurrent_calls: expected an integer, got a number",
        ),
        (
            "{max_call_duration: 0}",
            "trunks[0].limits.max_call_duration: 0 is out of range 1..2.592e+06",
        ),
        (
            "{calls_per_sec: 5}",
            "trunks[0].limits.calls_per_sec: unknown key; did you mean 'calls_per_second'? (known: calls_per_second, concurrent_calls, registrations_per_second, max_call_duration)",
        ),
        ("[20]", "trunks[0].limits: expected a mapping, got a list"),
    ],
)
def test_bad_trunk_limits(folder: Path, limits: str, expected: str) -> None:
    assert problems(folder, BASE + f"    limits: {limits}\n") == [expected]


def test_admin_section(folder: Path) -> None:
    settings, warnings = load(
        folder, BASE + "admin: {listen: '127.0.0.1:9461', token_file: admin.token}\n"
    )
    admin = settings.admin  # type: ignore[attr-defined]
    assert (admin.host, admin.port, admin.token) == ("127.0.0.1", 9461, TOKEN.encode())
    assert admin.token_source == f"file:{folder}/admin.token"
    assert not admin.allow_remote
    assert TOKEN not in repr(settings)
    assert warnings == []
    no_admin, _ = load(folder, BASE)
    assert no_admin.admin is None  # type: ignore[attr-defined]


def test_admin_outside_loopback_only_when_allowed(folder: Path) -> None:
    text = BASE + "admin: {listen: '0.0.0.0:9461', token_file: admin.token}\n"
    assert problems(folder, text) == [
        "admin.listen: '0.0.0.0:9461' is not a loopback address: the admin API can lift bans and "
        "reload, so it listens outside loopback only with admin.allow_remote: true (firewall it)"
    ]
    allowed = text.replace("admin.token}", "admin.token, allow_remote: true}")
    settings, _ = load(folder, allowed)
    assert settings.admin.host == "0.0.0.0"  # type: ignore[attr-defined]
    v6, _ = load(folder, BASE + "admin: {listen: '[::1]:9461', token_file: admin.token}\n")
    assert v6.admin.host == "::1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("admin", "token", "expected"),
    [
        (
            "{listen: '127.0.0.1:9461'}",
            None,
            "admin.token_file: missing: the admin API needs a bearer token, e.g. `openssl rand -hex 32 > /etc/sipguard/admin.token`",
        ),
        (
            "{token_file: admin.token}",
            None,
            "admin.listen: missing: give address:port, e.g. 127.0.0.1:9461",
        ),
        (
            "{listen: '127.0.0.1:9461', token_file: admin.token}",
            "short\n",
            "admin.token_file: the token is shorter than 16 bytes",
        ),
        (
            "{listen: '127.0.0.1:9461', token_file: admin.token}",
            "two words and more than sixteen\n",
            "admin.token_file: the token must be one line of visible ASCII without spaces (it travels in an HTTP header), e.g. `openssl rand -hex 32`",
        ),
        (
            "{listen: '127.0.0.1:9461', token_file: nothing.token}",
            None,
            "admin.token_file: cannot read token file '{dir}/nothing.token': No such file or directory",
        ),
        (
            "{listen: 'localhost:9461', token_file: admin.token}",
            None,
            "admin.listen: 'localhost:9461': 'localhost' is not an IP address; sipguard does no DNS at runtime, so give an IP literal",
        ),
        (
            "{listen: '127.0.0.1:9460', token_file: admin.token}",
            None,
            "admin.listen: is metrics.listen too: give the admin API its own port",
        ),
        (
            "{listen: '127.0.0.1:9461', token_file: admin.token, allow_remote: 'yes'}",
            None,
            "admin.allow_remote: expected true or false, got a string",
        ),
        (
            "{listen: '127.0.0.1:9461', token_file: admin.token, token: x}",
            None,
            "admin.token: unknown key; did you mean 'token_file'? (known: listen, token_file, allow_remote)",
        ),
    ],
)
def test_bad_admin_section(folder: Path, admin: str, token: str | None, expected: str) -> None:
    if token is not None:
        (folder / "admin.token").write_text(token)
    text = BASE + "metrics: {listen: '127.0.0.1:9460'}\n" + f"admin: {admin}\n"
    found = problems(folder, text)
    assert [p.replace(str(folder), "{dir}") for p in found] == [expected]


def test_token_readable_by_others_is_a_warning(folder: Path) -> None:
    (folder / "admin.token").chmod(0o644)
    _, warnings = load(
        folder, BASE + "admin: {listen: '127.0.0.1:9461', token_file: admin.token}\n"
    )
    assert warnings == [
        f"{folder}/sipguard.yaml: admin.token_file: token file '{folder}/admin.token' is mode "
        "0644: open to more users than its owner and group; chmod 0640 (or 0600)"
    ]


def test_settings_carry_the_hash_of_the_loaded_file(folder: Path) -> None:
    settings, _ = load(folder, BASE)
    data = (folder / "sipguard.yaml").read_bytes()
    assert settings.source_sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]


def test_admin_cli_reads_the_admin_section_of_a_broken_file(folder: Path) -> None:
    path = folder / "sipguard.yaml"
    path.write_text(
        "listen: nonsense\ntrunks: 7\nadmin: {listen: '127.0.0.1:9461', token_file: admin.token}\n"
    )
    admin = load_admin_settings(str(path))
    assert admin is not None and admin.port == 9461 and admin.token == TOKEN.encode()
    path.write_text(BASE)
    assert load_admin_settings(str(path)) is None
    path.write_text("admin: {listen: '192.0.2.1:9461', token_file: admin.token}\n")
    with pytest.raises(ConfigError, match="is not a loopback address"):
        load_admin_settings(str(path))
    path.write_text("admin: [\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_admin_settings(str(path))
