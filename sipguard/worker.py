"""The worker's side of `workers: N` (issue 15): what a process started by the supervisor is
told, and how it differs from a lone daemon.

Owns: the environment contract between `sipguard.supervisor` and its workers (`WORKER_ENV`:
the worker's index, from 0, which a restarted worker keeps: its upstream-facing port is
`upstream_source_port` + it; `METRICS_ENV`: the Unix socket on which the worker answers
/metrics for the supervisor to aggregate; `CONTROL_ENV`: the Unix socket on which the worker
serves the admin API's routes without the token, given only when the config has an `admin`
section: the supervisor serves the admin listener and asks every worker there; `NOTIFY_SOCKET`: the
supervisor's, so READY=1/RELOADING=1/STOPPING=1 of each worker reach it), and `WorkerRole`,
read once at start. The shared nonce key arrives on stdin (64 hex digits, then EOF) rather than
in the environment, which other processes of the same user can read: every worker then issues
and verifies the same nonces, so a challenge answered over a new connection (which the kernel
may hand to another worker) is still valid.
A worker ends itself when its supervisor is gone (`bind_to_supervisor`: Linux PR_SET_PDEATHSIG),
so a supervisor killed with SIGKILL never leaves workers holding the ports.

Never does: bind a SIP port (the server does, with SO_REUSEPORT when `WorkerRole` says so), or
decide anything about SIP.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Final

WORKER_ENV: Final = "SIPGUARD_WORKER"
METRICS_ENV: Final = "SIPGUARD_WORKER_METRICS"
CONTROL_ENV: Final = "SIPGUARD_WORKER_CONTROL"
SUPERVISOR_ENV: Final = "SIPGUARD_SUPERVISOR_PID"
PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>
KEY_HEX_CHARS: Final = 64  # the nonce key on stdin: 32 bytes


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process is worker `index` of a supervisor; `nonce_key` is the host's shared one
    (None when the config names a key itself); `metrics_path` the Unix socket for /metrics;
    `control_path` the one for the admin API's routes (None: no admin API)."""

    index: int
    nonce_key: bytes | None
    metrics_path: str | None
    control_path: str | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, stdin: IO[bytes] | None = None
    ) -> WorkerRole | None:
        """The role given by the supervisor, or None for a lone daemon. Reads stdin to EOF."""
        env = os.environ if environ is None else environ
        index = env.get(WORKER_ENV)
        if index is None or not index.isdigit():
            return None
        source = sys.stdin.buffer if stdin is None else stdin
        text = source.read(KEY_HEX_CHARS + 2).strip()
        key = bytes.fromhex(text.decode("ascii")) if len(text) == KEY_HEX_CHARS else None
        return cls(int(index), key, env.get(METRICS_ENV) or None, env.get(CONTROL_ENV) or None)


def bind_to_supervisor(environ: Mapping[str, str] | None = None) -> bool:
    """Have the kernel send SIGTERM to this worker when its supervisor dies (Linux), and tell
    whether the supervisor is still there (False: it died before we asked; exit)."""
    env = os.environ if environ is None else environ
    expected = env.get(SUPERVISOR_ENV, "")
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    return not expected.isdigit() or os.getppid() == int(expected)
