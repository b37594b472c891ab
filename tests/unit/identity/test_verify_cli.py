"""`sipguard verify-identity`: keys from the config, one message on stdin, exit 0 / 1 / 78."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipguard.cli import main
from sipguard.identity import Stamper
from sipguard.settings import IdentitySettings, SigningKey, Trunk
from sipguard.verifyid import verify_identity_command

SECRET = "k1-secret-0123456789abcdef"
NOW = 1_764_655_000.0
CONFIG = """\
listen: [udp://127.0.0.1:5060]
upstream: [sip:127.0.0.1:5070]
auth: {realm: sipguard.test}
trunks:
  - name: acme
    whitelist: [127.0.0.1]
    attributes: {org_id: "8d1c5e0a"}
"""
IDENTITY = "identity:\n  signing_keys: [{id: k1, secret_file: k1.key}]\n  max_age: 30\n"


def signed_invite(now: float = NOW) -> bytes:
    key = SigningKey("k1", SECRET.encode())
    trunk = Trunk("acme", attributes=(("org_id", "8d1c5e0a"),))
    lines = Stamper(IdentitySettings(signing_keys=(key,)), [trunk]).lines(
        "acme", "", ("127.0.0.1", 5062), b"cid@x", (1, b"INVITE"), b"t1", now
    )
    return (
        b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:a@x>;tag=t1\r\nTo: <sip:bot@x>\r\nCall-ID: cid@x\r\nCSeq: 1 INVITE\r\n"
        + b"".join(line + b"\r\n" for line in lines)
        + b"Content-Length: 0\r\n\r\n"
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "k1.key").write_text(SECRET + "\n")
    path = tmp_path / "sipguard.yaml"
    path.write_text(CONFIG + IDENTITY)
    return path


def run(config: Path, message: bytes, max_age: float | None = None, now: float = NOW + 1) -> int:
    return verify_identity_command(str(config), max_age, io.BytesIO(message), now)


def test_valid(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, signed_invite()) == 0
    assert capsys.readouterr().out == "valid\n"


def test_lf_line_ends_and_no_final_empty_line(config: Path) -> None:
    text = signed_invite().replace(b"\r\n", b"\n").rstrip(b"\n")
    assert run(config, text) == 0


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: m.replace(b"acme", b"other"), "the signature does not match the headers"),
        (lambda m: m.replace(b"Call-ID: cid@x", b"Call-ID: cid@y"), "does not match"),
        (lambda m: m.replace(b"X-Sipguard-Identity", b"X-Other"), "no signature header"),
        (lambda m: m.replace(b"kid=k1", b"kid=k9"), "signed with an unknown key id"),
        (lambda m: b"garbage", "not a readable SIP message"),
        (lambda m: m + b"x" * 65536, "longer than 65535 bytes"),
    ],
)
def test_invalid_exit_1_with_the_reason(
    config: Path, capsys: pytest.CaptureFixture[str], edit: object, reason: str
) -> None:
    assert callable(edit)
    assert run(config, edit(signed_invite())) == 1
    err = capsys.readouterr().err
    assert err.startswith("invalid: ") and reason in err


def test_max_age_from_config_or_option(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, signed_invite(), now=NOW + 30) == 0
    assert run(config, signed_invite(), now=NOW + 31) == 1
    assert "older than max_age" in capsys.readouterr().err
    assert run(config, signed_invite(), max_age=60, now=NOW + 31) == 0
    assert run(config, signed_invite(), max_age=5, now=NOW + 6) == 1


def test_config_without_identity_or_broken_is_78(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text(CONFIG)
    assert run(plain, signed_invite()) == 78
    assert "no identity section" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text(CONFIG + "identity: {signing_keys: [{id: k1, secret_file: nope.key}]}\n")
    assert run(broken, signed_invite()) == 78
    err = capsys.readouterr().err
    assert "identity.signing_keys[0].secret_file: cannot read key file" in err
    assert SECRET not in err


def test_command_line(config: Path) -> None:
    """Through `python -m sipguard` with the real clock: a fresh signature is valid, an old one
    is expired."""
    for now, code, out in [(time.time(), 0, b"valid\n"), (NOW, 1, b"")]:
        done = subprocess.run(
            [sys.executable, "-m", "sipguard", "verify-identity", "--config", str(config)],
            input=signed_invite(now),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert (done.returncode, done.stdout) == (code, out), done.stderr


def test_parser_knows_the_subcommand(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["verify-identity", "--help"])
    assert "--max-age" in capsys.readouterr().out


def test_main_dispatches(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(signed_invite(time.time()))))
    assert main(["verify-identity", "--config", str(config), "--max-age", "60"]) == 0
    assert capsys.readouterr().out == "valid\n"
