"""The `workers` key: how many processes serve this host (issue 15).

Owns: the check of `workers` (`auto`: one per CPU, as `os.cpu_count()` reports them; or an
integer 1..MAX_WORKERS; default 1: one process and no supervisor, exactly as before). Listener
ports are fixed already (`listen` refuses port 0), so every worker binds the same ones.

Never does: start a process (`sipguard.supervisor` does, from `Settings.workers`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from sipguard.config.reader import Reader

AUTO: Final = "auto"
MAX_WORKERS: Final = 256


def cpu_count() -> int:
    """The CPUs this process may run on (the affinity mask when the OS has one), at least 1."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


def read_workers(r: Reader, value: object, done: Mapping[str, Any]) -> int | None:
    """`workers: auto | N`: the number of worker processes."""
    if value is None:
        return 1
    if value == AUTO:
        count = cpu_count()
    else:
        if isinstance(value, str):
            r.error("workers", f"{value!r}: expected `auto` or an integer 1..{MAX_WORKERS}")
            return None
        checked = r.integer(value, "workers", 1, MAX_WORKERS)
        if checked is None:
            return None
        count = checked
    return count
