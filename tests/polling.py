"""The one way tests wait for something: poll a condition until a deadline.

Owns: `wait_for` (from a thread: the test body, a helper thread) and `wait_for_async` (from a
coroutine: the same poll, run off the event loop so the loop keeps serving meanwhile).

Never does: sleep to synchronise. The interval only paces the polling of a condition that has a
deadline; a condition that never becomes true fails the test with what was awaited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02
) -> T:
    """Poll `condition` until it returns a truthy value (returned), or raise TimeoutError naming
    `what` once `timeout` seconds have passed. An exception from `condition` ends the wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait, not a synchronisation


async def wait_for_async(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.005
) -> T:
    """`wait_for` from a coroutine: the condition is polled in a worker thread while the event
    loop runs (conditions read counters and flags the loop sets; they must not call the loop)."""
    return await asyncio.to_thread(wait_for, condition, timeout, what, interval)
