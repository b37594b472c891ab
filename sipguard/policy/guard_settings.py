"""The guard's settings: ban thresholds, the request throttle's rate, the table cap, never_ban.

Owns: `GuardSettings`, which `sipguard.settings.Protection` maps onto (the core builds it), its
checks against programming errors, and the never_ban matcher every part of the guard asks
(`GuardSettings.exempt_matcher`).

Never does: validate operator input (sipguard.config does, with messages for the operator), hold
state, read a clock or log. Stdlib and `sipguard.settings` only.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field

from sipguard.settings import Protection

# The defaults the operator's `protection` section has, with their reasons (one home for each).
_PROTECTION = Protection()


def _nobody_exempt(ip: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Thresholds of the guard; `sipguard.settings.Protection` maps onto it, and the defaults of
    the fields they share are `Protection`'s."""

    # Wrong answers to a challenge from one source within `ban_window` seconds that ban it.
    ban_failures: int = _PROTECTION.ban_failures
    ban_window: float = _PROTECTION.ban_window
    # Seconds a ban lasts. 0 disables bans (failures are still counted): sipguard.config
    # accepts 0, so the guard must too.
    ban_duration: float = _PROTECTION.ban_duration
    # Sources never banned nor rate limited: the whitelist's compiled matcher (ip -> bool) or any
    # container of IP strings. Excluded from eq/hash: a matcher has no useful equality.
    never_ban: Callable[[str], bool] | Container[str] = field(
        default=_nobody_exempt, compare=False, hash=False
    )
    # A source where someone authenticated within `proven_for` seconds hosts real users (a NAT
    # office): it tolerates this many failures per window instead (see `Bans.record_success`);
    # None = twice ban_failures, so raising ban_failures alone never makes the settings invalid.
    ban_failures_proven: int | None = None
    proven_for: float = 600.0
    # Token bucket for unauthenticated requests per source; arithmetic in
    # `Throttle.allow_request`.
    rate: float = _PROTECTION.rate
    burst: int = _PROTECTION.burst
    # Cap of every per-source table: ~100 k entries cost tens of MB (`sipguard.policy.bans`).
    max_tracked_sources: int = 100_000
    # Case-insensitive substrings of User-Agent that mark a well-known scanner.
    scanner_user_agents: tuple[str, ...] = _PROTECTION.scanner_user_agents

    def __post_init__(self) -> None:
        # Guards against programming errors; sipguard.config validates operator input.
        if self.ban_failures < 1:
            raise ValueError("guard: ban_failures must be >= 1")
        if self.ban_failures_proven is not None and self.ban_failures_proven < self.ban_failures:
            raise ValueError("guard: ban_failures_proven must be >= ban_failures")
        if not (self.ban_window > 0 and self.ban_duration >= 0 and self.proven_for >= 0):
            raise ValueError("guard: ban_window must be > 0, ban_duration and proven_for >= 0")
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError("guard: rate must be > 0 and burst >= 1")
        if self.max_tracked_sources < 1:
            raise ValueError("guard: max_tracked_sources must be >= 1")
        if any(not ua or not ua.isascii() for ua in self.scanner_user_agents):
            raise ValueError("guard: scanner_user_agents must be non-empty ASCII strings")

    def exempt_matcher(self) -> Callable[[str], bool]:
        """`never_ban` as a function of the source IP, whichever form it was given in."""
        never_ban = self.never_ban
        if callable(never_ban):
            return never_ban
        return never_ban.__contains__
