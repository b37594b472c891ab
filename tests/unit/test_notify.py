"""sd_notify: a datagram socket standing in for systemd sees READY=1, RELOADING=1 (with
MONOTONIC_USEC), STOPPING=1 and STATUS=; a missing or broken socket never raises."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipguard.notify import MAX_STATUS_CHARS, Notifier


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket, named by NOTIFY_SOCKET, as systemd sets it up."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_no_notify_socket_means_no_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier.from_environ() is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": ""}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:999"}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "@"}) is None


def test_ready_reloading_stopping(systemd: socket.socket) -> None:
    notifier = Notifier.from_environ()
    assert notifier is not None
    assert notifier.ready("serving on udp://127.0.0.1:5060")
    assert received(systemd) == ["READY=1", "STATUS=serving on udp://127.0.0.1:5060"]
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    fields = received(systemd)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert before <= int(fields[1].removeprefix("MONOTONIC_USEC=")) <= after
    assert notifier.stopping()
    assert received(systemd) == ["STOPPING=1"]
    assert notifier.stopping("draining", needs=35.5)
    assert received(systemd) == ["STOPPING=1", "EXTEND_TIMEOUT_USEC=35500000", "STATUS=draining"]
    assert notifier.watchdog()
    assert received(systemd) == ["WATCHDOG=1"]


def test_status_is_one_bounded_line(systemd: socket.socket) -> None:
    notifier = Notifier.from_environ()
    assert notifier is not None
    notifier.status("reload failed:\nREADY=1\n" + "x" * 1000)
    (status,) = received(systemd)
    assert status.startswith("STATUS=reload failed: READY=1 x")
    assert len(status) == len("STATUS=") + MAX_STATUS_CHARS


def test_abstract_namespace_socket() -> None:
    name = f"sipguard-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None
        assert notifier.ready()
        assert received(sock) == ["READY=1"]


def test_send_to_missing_socket_returns_false(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.ready() is False
    assert notifier.stopping() is False
    assert Notifier("/" + "x" * 200).ready() is False  # path longer than sun_path
    assert "gone.sock" in repr(notifier)
