"""A real `redis-server` (Debian package `redis-server`, installed by scripts/_setup.sh) for the
shared-state tests: on a free loopback port, no persistence, stopped (or killed) by PID.

Owns: one server process per `RedisServer`, which can be stopped and started again on the same
port (an outage and a recovery). Never: a non-loopback address, a server left running.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType

from tests.integration.harness import V4, HarnessError, free_port
from tests.polling import wait_for

REDIS_SERVER = shutil.which("redis-server")


def answers_ping(port: int) -> bool:
    """Whether a Redis server on `port` (loopback) answers PING."""
    try:
        with socket.create_connection((V4, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        if REDIS_SERVER is None:
            raise HarnessError("redis-server is not installed (scripts/_setup.sh installs it)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port("tcp")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{V4}:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", V4, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: answers_ping(self.port) or self.proc is None or self.proc.poll(), 10,
                 "redis-server answering PING")  # fmt: skip
        if self.proc.poll() is not None:
            raise HarnessError(f"redis-server exited {self.proc.returncode}; see {self.workdir}")
        return self

    def kill(self) -> None:
        """SIGKILL by PID: an outage, as abrupt as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
