"""Files holding secrets more open than the README asks (0640) are warned about, by key path."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipguard.config import load_settings_with_warnings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY = b"0123456789abcdef0123456789abcdef"
HEAD = """\
listen: [udp://127.0.0.1:5060]
upstream: [sip:127.0.0.1:5070]
auth: {realm: sipguard.test, secret_file: nonce.key}
trunks:
  - name: demo
    whitelist: [127.0.0.1]
    credentials:
"""
OPEN = "open to more users than its owner and group; chmod 0640 (or 0600)"


def warnings_of(folder: Path, credential: str, config_mode: int = 0o600) -> list[str]:
    path = folder / "sipguard.yaml"
    path.write_text(HEAD + f"      - {credential}\n")
    path.chmod(config_mode)
    _, warnings = load_settings_with_warnings(str(path), environ={}, now=NOW)
    return [warning.replace(f"{folder}/", "") for warning in warnings]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "nonce.key").write_bytes(KEY + b"\n")
    (tmp_path / "nonce.key").chmod(0o600)
    (tmp_path / "pw").write_bytes(b"from-file\n")
    return tmp_path


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o440, 0o640])
def test_private_modes_are_quiet(folder: Path, mode: int) -> None:
    (folder / "pw").chmod(mode)
    (folder / "nonce.key").chmod(mode)
    assert warnings_of(folder, "{username: alice, password_file: pw}") == []


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o650, 0o666])
def test_password_file_open_to_others(folder: Path, mode: int) -> None:
    (folder / "pw").chmod(mode)
    assert warnings_of(folder, "{username: alice, password_file: pw}") == [
        f"sipguard.yaml: trunks[0].credentials[0].password_file: password file 'pw' is mode "
        f"{mode:04o}: {OPEN}"
    ]


def test_secret_file_open_to_others(folder: Path) -> None:
    (folder / "nonce.key").chmod(0o644)
    (folder / "pw").chmod(0o600)
    assert warnings_of(folder, "{username: alice, password_file: pw}") == [
        f"sipguard.yaml: auth.secret_file: secret file 'nonce.key' is mode 0644: {OPEN}"
    ]


@pytest.mark.parametrize(
    "credential",
    ["{username: alice, password: s3cret}", "{username: alice, ha1: {MD5: " + "a" * 32 + "}}"],
)
def test_config_holding_a_password_equivalent(folder: Path, credential: str) -> None:
    assert warnings_of(folder, credential, 0o640) == []
    assert warnings_of(folder, credential, 0o644) == [
        f"sipguard.yaml: holds passwords or HA1 values and is mode 0644: {OPEN}"
    ]


def test_config_without_inline_secrets_may_be_world_readable(folder: Path) -> None:
    (folder / "pw").chmod(0o600)
    assert warnings_of(folder, "{username: alice, password_file: pw}", 0o644) == []


def test_tls_private_key_but_not_certificate(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_bytes(b"placeholder\n")
        (tmp_path / name).chmod(0o644)
    path = tmp_path / "sipguard.yaml"
    path.write_text(
        "listen: [tls://127.0.0.1:5061]\ntls: {certificate: cert.pem, private_key: key.pem}\n"
        "upstream: [sip:127.0.0.1:5070]\nauth: {realm: r, secret_env: K}\n"
        "trunks: [{name: t, whitelist: [127.0.0.1]}]\n"
    )
    _, warnings = load_settings_with_warnings(str(path), environ={"K": KEY.decode()}, now=NOW)
    assert warnings == [
        f"{path}: tls.private_key: private key '{tmp_path}/key.pem' is mode 0644: {OPEN}"
    ]


def test_no_secret_in_any_warning(folder: Path) -> None:
    (folder / "pw").chmod(0o666)
    (folder / "nonce.key").chmod(0o666)
    text = " ".join(warnings_of(folder, "{username: alice, password_file: pw}", 0o666))
    assert "from-file" not in text and KEY.decode() not in text and "0666" in text
