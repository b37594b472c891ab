"""`sipguard hash-password`, run as a subprocess: stdin, the terminal, exit codes."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from sipguard.auth.digest import compute_ha1

CMD = [sys.executable, "-m", "sipguard", "hash-password"]


def _run(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CMD, *args], input=stdin, capture_output=True, timeout=30, check=False)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def test_all_algorithms_from_stdin() -> None:
    out = _run(["--username", "acme", "--realm", "sipguard.example"], b"s3cret\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{a}: {compute_ha1(a, 'acme', 'sipguard.example', 's3cret')}"
        for a in ("MD5", "SHA-256", "SHA-512-256")
    ]
    assert "s3cret" not in out.stdout + out.stderr


def test_chosen_algorithms_in_order_and_crlf_stripped() -> None:
    out = _run(["-u", "user", "-r", "example.com", "-a", "SHA-256", "-a", "MD5"], b"secret\r\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "SHA-256: de24c1fac8b54ea8380bb2299c3bbcf6489084c44deb242d18fe409698148935",
        "MD5: 30969131580e626606ce70ceaab77719",
    ]


def test_only_the_first_line_and_no_trailing_newline() -> None:
    out = _run(["-u", "user", "-r", "example.com", "-a", "MD5"], b"secret")
    assert out.stdout == "MD5: 30969131580e626606ce70ceaab77719\n"
    out = _run(["-u", "user", "-r", "example.com", "-a", "MD5"], b"secret\nignored\n")
    assert out.stdout == "MD5: 30969131580e626606ce70ceaab77719\n"


def test_spaces_and_utf8_are_part_of_the_password() -> None:
    out = _run(["-u", "Jäsøn", "-r", "r", "-a", "SHA-256"], " pä ss \n".encode())
    assert out.stdout == f"SHA-256: {compute_ha1('SHA-256', 'Jäsøn', 'r', ' pä ss ')}\n"


@pytest.mark.parametrize("stdin", [b"", b"\n", b"\r\n"])
def test_empty_password_is_usage_error(stdin: bytes) -> None:
    out = _run(["-u", "u", "-r", "r"], stdin)
    assert out.returncode == 64
    assert out.stdout == ""
    assert "empty" in out.stderr


def test_not_utf8() -> None:
    out = _run(["-u", "u", "-r", "r"], b"\xff\xfe\n")
    assert out.returncode == 65 and out.stdout == ""


def test_overlong_password() -> None:
    out = _run(["-u", "u", "-r", "r"], b"x" * 5000 + b"\n")
    assert out.returncode == 64 and "longer" in out.stderr


def test_empty_username_or_realm() -> None:
    assert _run(["-u", "", "-r", "r"], b"pw\n").returncode == 64
    assert _run(["-u", "u", "-r", ""], b"pw\n").returncode == 64


def test_password_is_not_an_option() -> None:
    out = _run(["-u", "u", "-r", "r", "--password", "pw"], b"")
    assert out.returncode == 2  # argparse usage error: there is no such option


def test_unknown_algorithm_refused() -> None:
    from sipguard.hashpw import hash_password_command

    assert hash_password_command("u", "r", ["SHA-1"]) == 64


def _read_until(fd: int, marker: bytes, deadline: float) -> bytes:
    seen = b""
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} from the command; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _run_on_tty(first: bytes, second: bytes) -> tuple[int, str, bytes]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CMD, "-u", "user", "-r", "example.com", "-a", "MD5"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        deadline = time.monotonic() + 30
        # getpass flushes pending input (TCSAFLUSH): answer each prompt only once it is shown.
        seen = _read_until(master, b"Password: ", deadline)
        os.write(master, first + b"\n")
        seen += _read_until(master, b"(again): ", deadline)
        os.write(master, second + b"\n")
        stdout, _ = proc.communicate(timeout=30)
        return proc.returncode, stdout.decode(), seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)


def test_terminal_asks_twice() -> None:
    code, stdout, shown = _run_on_tty(b"secret", b"secret")
    assert code == 0
    assert stdout == "MD5: 30969131580e626606ce70ceaab77719\n"
    assert b"secret" not in shown  # not echoed


def test_terminal_mismatch() -> None:
    code, stdout, _ = _run_on_tty(b"secret", b"secreT")
    assert code == 64 and stdout == ""
