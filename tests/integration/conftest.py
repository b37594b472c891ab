"""Fixtures for the real-peer integration tests: SIPp runner, trustme TLS files, daemons.

Owns: the lifetime of everything the harness starts; each fixture stops its processes by PID
in teardown. Must never: start anything that is not stopped at teardown, or use non-loopback
addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import SIPP, Daemon, Sipp, TlsFiles, make_tls_files
from tests.integration.redis_server import RedisServer

DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    if SIPP is None:
        pytest.skip("sipp is not installed (apt-get install sip-tester)")
    runner = Sipp(tmp_path / "sipp")
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    """daemon_factory(config, name=...) -> a started Daemon, stopped (by PID) at teardown."""
    started: list[Daemon] = []

    def make(config: Mapping[str, Any], *, name: str = "sipguard", start: bool = True) -> Daemon:
        daemon = Daemon(tmp_path / f"daemon-{len(started)}", config, name=name)
        started.append(daemon)
        return daemon.start() if start else daemon

    try:
        yield make
    finally:
        for daemon in reversed(started):
            daemon.__exit__(None, None, None)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped by PID at teardown."""
    with RedisServer(tmp_path / "redis") as server:
        yield server
