"""The edge guard: bans, the request throttle and the scanner list under one set of settings.

Owns: `Guard`, what the core asks about a source (SECURITY-CASES 26, 33): is it banned, may it
send one more unauthenticated request, is its User-Agent a scanner's, and what its failures and
successes change; its reload (`configure`), housekeeping (`expire`) and sizes (`GuardSizes`).
The parts live by concern: `sipguard.policy.bans` (failures counted per source, bans and their
events), `sipguard.policy.throttle` (a token bucket per source), `sipguard.policy.scanners`
(User-Agent names) and `sipguard.policy.guard_settings` (`GuardSettings`); their names are
handed on here, where the core and the shell import them.

Never does: read a clock, sleep, log, touch sockets or parse SIP (the core hands over the source
IP and the raw User-Agent bytes; every method takes `now`). Stdlib only.

The cost per message is the parts' own: `Guard` is the ban table (`Core.handle` asks
`is_banned` for every message, a method of `Bans`), and the questions asked of every request
(`is_scanner`, `allow_request`) are the parts' bound methods, so asking the guard takes no call
more than asking the part.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipguard.policy.bans import BanEvent, BanRecord, Bans, UnbanEvent, UnbanReason
from sipguard.policy.guard_settings import GuardSettings
from sipguard.policy.scanners import ScannerList
from sipguard.policy.throttle import Throttle

__all__ = [
    "BanEvent",
    "BanRecord",
    "Guard",
    "GuardSettings",
    "GuardSizes",
    "UnbanEvent",
    "UnbanReason",
]


@dataclass(frozen=True, slots=True)
class GuardSizes:
    """Table sizes and counters for metrics (gauges and counters, no IP labels)."""

    bans: int
    failures: int
    proven: int
    buckets: int
    evicted: int  # entries evicted from any full table since start
    exempted: int  # bans not placed because the source is in never_ban


class Guard(Bans):
    """Per-source bans, failure counting, rate limiting and scanner detection (sans-IO)."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        settings = settings or GuardSettings()
        self._throttle = Throttle(settings)
        # Token bucket per source for unauthenticated requests: `Throttle.allow_request`.
        self.allow_request = self._throttle.allow_request
        super().__init__(settings)  # configures the bans and, through `configure`, the rest

    def configure(self, settings: GuardSettings) -> None:
        """Apply new settings (config reload) keeping bans and counters; trims to a lower cap.

        The throttle forgets its buckets (they cache never_ban answers; a forgotten bucket is a
        full one, which only errs on the side of serving). What can fail (the scanner pattern)
        is built before anything is assigned, so a failure changes nothing."""
        scanners = ScannerList(settings.scanner_user_agents)
        super().configure(settings)
        self._throttle.configure(settings)
        # True if the User-Agent contains a configured scanner name: `ScannerList.is_scanner`.
        self.is_scanner = scanners.is_scanner

    def expire(self, now: float) -> list[UnbanEvent]:
        """Forget what has expired; return the bans that ended (for the `unbanned` log)."""
        events = super().expire(now)
        self._throttle.expire(now)
        return events

    def sizes(self) -> GuardSizes:
        throttle = self._throttle
        return GuardSizes(
            bans=len(self._bans),
            failures=len(self._failures),
            proven=len(self._proven),
            buckets=throttle.tracked,
            evicted=self._evicted + throttle.evicted,
            exempted=self._exempted,
        )
