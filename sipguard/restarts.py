"""When a supervised worker that died is started again, and when the supervisor gives up.

Owns: the back-off (`restart_delay`: RESTART_DELAY, doubling up to MAX_RESTART_DELAY, back to
RESTART_DELAY once a worker served STABLE_AFTER seconds) and the give-up rule (`DeathRule`: more
than MAX_DEATHS deaths within DEATH_WINDOW seconds, all workers together).

Never does: start, signal or wait for a process (`sipguard.supervisor` does), read a clock (the
moment of a death and how long a worker served are given).
"""

from __future__ import annotations

from collections import deque
from typing import Final

RESTART_DELAY: Final = 0.2  # seconds before the first restart of a worker that died
MAX_RESTART_DELAY: Final = 10.0
STABLE_AFTER: Final = 30.0  # a worker that served this long starts its back-off afresh
MAX_DEATHS: Final = 5  # give up when more than this many deaths fall
DEATH_WINDOW: Final = 60.0  # within this many seconds


class DeathRule:
    """The give-up rule: more than `limit` deaths within `window` seconds (all workers)."""

    def __init__(self, limit: int = MAX_DEATHS, window: float = DEATH_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._deaths: deque[float] = deque()

    def died(self, now: float) -> bool:
        """Count a death at `now` (monotonic seconds); True when it is time to give up."""
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > self.window:
            self._deaths.popleft()
        return len(self._deaths) > self.limit


def restart_delay(previous: float, served: float) -> float:
    """The back-off before a restart: RESTART_DELAY after a worker that served STABLE_AFTER
    seconds, else double the previous delay, at most MAX_RESTART_DELAY."""
    if served >= STABLE_AFTER:
        return RESTART_DELAY
    return min(previous * 2, MAX_RESTART_DELAY)
