"""`sipguard check-config FILE` as operators run it: 0 and a summary, or 78 and every error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EX_CONFIG = 78


def check_config(path: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipguard", "check-config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def install_example(folder: Path, mode: int = 0o640) -> Path:
    """The example config copied as the README installs it (mode 0640 by default)."""
    path = folder / "sipguard.yaml"
    path.write_bytes((ROOT / "config" / "sipguard.example.yaml").read_bytes())
    path.chmod(mode)
    return path


def test_example_config_is_accepted(tmp_path: Path) -> None:
    install_example(tmp_path)
    result = check_config("sipguard.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "sipguard.yaml: OK: 4 listener(s), 1 upstream(s), 1 trunk(s), "
        "2 whitelist rule(s), 1 credential(s), 1 warning(s)"
    )
    assert result.stderr == (
        "warning: sipguard.yaml: auth: no secret_file or secret_env: a random nonce key per "
        "process, so nonces do not survive a restart and are not shared between instances; "
        "make one with `sipguard gen-key /etc/sipguard/nonce.key` and set auth.secret_file\n"
    )


def test_config_holding_passwords_readable_by_others_is_warned(tmp_path: Path) -> None:
    install_example(tmp_path, 0o644)
    result = check_config("sipguard.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 warning(s)" in result.stdout
    assert (
        "warning: sipguard.yaml: holds passwords or HA1 values and is mode 0644: open to more "
        "users than its owner and group; chmod 0640 (or 0600)\n"
    ) in result.stderr


def test_good_test_config_is_accepted() -> None:
    result = check_config("config/test-good.yaml")
    assert result.returncode == 0, result.stderr
    assert "3 trunk(s), 8 whitelist rule(s), 3 credential(s)" in result.stdout


def test_bad_config_lists_every_error() -> None:
    result = check_config("config/test-bad.yaml")
    assert result.returncode == EX_CONFIG
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) >= 15
    assert (
        "error: config/test-bad.yaml: trunks[0].whitelist[1]: '10.0.0.9-10.0.0.1': "
        "range end is below its start"
    ) in errors
    assert "s3cret" not in result.stderr  # a password never appears, even in a bad config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: [udp://127.0.0.1:5060\n", "line 2, column 1: YAML syntax error"),
        ("auth:\n  realm: x\n bad: 1\n", "line 3, column 2: YAML syntax error"),
        ("a: b: c\n", "line 1, column 5: YAML syntax error: mapping values are not allowed"),
        ("trunks: [10.*.*.*, *]\n", "quote wildcard"),
        (
            "listen: [udp://127.0.0.1:5060]\nlisten: []\n",
            "line 2, column 1: duplicate key 'listen'",
        ),
        ("auth: {realm: x}\n", "listen: missing"),
        (
            "listen: [udp://127.0.0.1:5060]\nupstream: [sip:127.0.0.1:5070]\nauth: {realm: r}\n"
            "trunks: [{name: open}]\n",
            "trunks[0]: neither a whitelist nor credentials",
        ),
        ("", "the file is empty"),
    ],
)
def test_bad_files_exit_78(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = check_config(path)
    assert result.returncode == EX_CONFIG, result.stdout
    assert f"error: {path}: " in result.stderr
    assert expected in result.stderr


def test_missing_file_exit_78(tmp_path: Path) -> None:
    result = check_config(tmp_path / "absent.yaml")
    assert result.returncode == EX_CONFIG
    assert f"error: {tmp_path / 'absent.yaml'}: cannot read: No such file or directory" in (
        result.stderr
    )


def test_unreadable_secret_file_exit_78(tmp_path: Path) -> None:
    example = (ROOT / "config" / "sipguard.example.yaml").read_text()
    secret = tmp_path / "nonce.key"
    text = example.replace(
        "  # secret_file: /etc/sipguard/nonce.key", f"  secret_file: {secret}", 1
    )
    assert text != example
    path = tmp_path / "sipguard.yaml"
    path.write_text(text)
    path.chmod(0o640)
    # Missing: an error naming the key and the file.
    result = check_config(path)
    assert result.returncode == EX_CONFIG
    assert (
        f"error: {path}: auth.secret_file: cannot read secret file '{secret}': "
        "No such file or directory"
    ) in result.stderr
    # Present but not a readable file (root reads through chmod 000, so use a directory).
    secret.mkdir()
    result = check_config(path)
    assert result.returncode == EX_CONFIG
    assert f"auth.secret_file: cannot read secret file '{secret}': Is a directory" in (
        result.stderr
    )
    # Readable and long enough: accepted, and the key is never printed.
    secret.rmdir()
    secret.write_bytes(b"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\n")
    secret.chmod(0o600)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "kkkk" not in result.stdout + result.stderr
    assert "0 warning(s)" in result.stdout


def test_tls_listener_needs_readable_certificate(tmp_path: Path) -> None:
    text = (
        "listen: ['tls://[::1]:5061']\nupstream: [sip:127.0.0.1:5070]\nauth: {realm: r}\n"
        "trunks: [{name: t, whitelist: ['::1']}]\n"
        f"tls: {{certificate: {tmp_path}/cert.pem, private_key: key.pem}}\n"
    )
    path = tmp_path / "tls.yaml"
    path.write_text(text)
    result = check_config(path)
    assert result.returncode == EX_CONFIG
    assert f"tls.certificate: cannot read certificate '{tmp_path}/cert.pem'" in result.stderr
    assert f"tls.private_key: cannot read private key '{tmp_path}/key.pem'" in result.stderr
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    result = check_config(path)
    assert result.returncode == 0, result.stderr
