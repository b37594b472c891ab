"""Real Redis Sentinel and Redis Cluster deployments on loopback for the shared-state tests:
plain `redis-server` binaries (Debian package `redis-server`, installed by scripts/_setup.sh;
`redis-server --sentinel` is Sentinel, `redis-cli --cluster create` forms the Cluster).

Owns: `SentinelSetup` (a master, one replica, one Sentinel watching them as SERVICE; a failover
on request) and `ClusterSetup` (three masters sharing the 16384 slots), each on free loopback
ports, without persistence, in a temporary directory, every process stopped by PID.

Never: a non-loopback address, a fixed sleep (every wait polls a condition with a deadline), a
process left running.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from functools import partial
from pathlib import Path
from types import TracebackType

from tests.integration.harness import V4, HarnessError, free_port
from tests.integration.redis_server import REDIS_SERVER, answers_ping
from tests.polling import wait_for

REDIS_CLI = shutil.which("redis-cli")
SERVICE = "sipguard-test"
START_TIMEOUT = 20.0  # seconds for a server to answer, a Cluster to agree on its slots


def command(port: int, *args: str) -> str:
    """One redis-cli command to the server on `port`; its output ("" when it does not answer)."""
    assert REDIS_CLI is not None
    done = subprocess.run(
        [REDIS_CLI, "-h", V4, "-p", str(port), *args],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else ""


class _Processes:
    """Servers started here, stopped by PID in reverse order."""

    def __init__(self, workdir: Path) -> None:
        if REDIS_SERVER is None or REDIS_CLI is None:
            raise HarnessError("redis-server/redis-cli missing (scripts/_setup.sh installs them)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, port: int, *args: str) -> subprocess.Popen[bytes]:
        assert REDIS_SERVER is not None
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [REDIS_SERVER, *args], cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs.append(proc)
        wait_for(lambda: answers_ping(port) or proc.poll() is not None, START_TIMEOUT, name)
        if proc.poll() is not None:
            raise HarnessError(f"{name} exited {proc.returncode}; see {self.workdir}")
        return proc

    def server(self, name: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            name, port, "--bind", V4, "--port", str(port), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(self.workdir), *extra,
        )  # fmt: skip

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.procs = []


class SentinelSetup(_Processes):
    """A master and its replica, watched by one Sentinel as SERVICE (quorum 1)."""

    def start(self) -> SentinelSetup:
        self.master_port, self.replica_port = free_port("tcp"), free_port("tcp")
        self.sentinel_port = free_port("tcp")
        self.server("master", self.master_port, "--repl-diskless-sync-delay", "0")
        self.server("replica", self.replica_port, "--replicaof", V4, str(self.master_port))
        wait_for(
            lambda: "master_link_status:up" in command(self.replica_port, "INFO", "replication"),
            START_TIMEOUT,
            "the replica in sync",
        )
        conf = self.workdir / "sentinel.conf"  # Sentinel rewrites it: a file of its own
        conf.write_text(
            f"bind {V4}\nport {self.sentinel_port}\ndir {self.workdir}\n"
            f"sentinel monitor {SERVICE} {V4} {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self.spawn("sentinel", self.sentinel_port, str(conf), "--sentinel")
        wait_for(self._replica_known, START_TIMEOUT, "the Sentinel seeing the replica")
        return self

    def _replica_known(self) -> bool:
        return str(self.replica_port) in command(
            self.sentinel_port, "SENTINEL", "replicas", SERVICE
        )

    @property
    def url(self) -> str:
        return f"redis+sentinel://{V4}:{self.sentinel_port}/{SERVICE}/0"

    def master(self) -> int:
        """The port of the master the Sentinel names now."""
        answer = command(self.sentinel_port, "SENTINEL", "get-master-addr-by-name", SERVICE)
        lines = answer.split()
        return int(lines[1]) if len(lines) == 2 else 0

    def failover(self) -> int:
        """Have the Sentinel promote the replica; the new master's port once it is one."""
        old = self.master()
        wait_for(  # NOGOODSLAVE until the Sentinel has heard the replica's state
            lambda: command(self.sentinel_port, "SENTINEL", "failover", SERVICE).startswith("OK"),
            START_TIMEOUT,
            "the Sentinel accepting the failover",
        )
        wait_for(lambda: self.master() not in (old, 0), START_TIMEOUT, "the failover")
        new = self.master()
        wait_for(
            lambda: (
                "role:master" in command(new, "INFO", "replication")
                and "role:slave" in command(old, "INFO", "replication")
            ),
            START_TIMEOUT,
            "the replica promoted and the old master demoted",
        )
        return new

    def __enter__(self) -> SentinelSetup:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ClusterSetup(_Processes):
    """Three Cluster masters on loopback (each with a bus port of its own), slots assigned."""

    def start(self) -> ClusterSetup:
        self.ports = [free_port("tcp") for _ in range(3)]
        for port in self.ports:
            self.server(
                f"node-{port}", port, "--cluster-enabled", "yes", "--cluster-port",
                str(free_port("tcp")), "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "2000",
            )  # fmt: skip
        assert REDIS_CLI is not None
        created = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"{V4}:{p}" for p in self.ports),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise HarnessError(f"redis-cli --cluster create failed:\n{created.stdout}")
        for port in self.ports:
            wait_for(
                partial(_cluster_ok, port), START_TIMEOUT, f"node {port} agreeing on the slots"
            )
        return self

    @property
    def url(self) -> str:
        return f"redis+cluster://{V4}:{self.ports[0]},{V4}:{self.ports[1]}"

    def __enter__(self) -> ClusterSetup:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _cluster_ok(port: int) -> bool:
    """Whether the node on `port` says the cluster is formed (every slot served)."""
    return "cluster_state:ok" in command(port, "CLUSTER", "INFO")
