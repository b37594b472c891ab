"""Bans for the edge, given the source IP and `now`: failures counted per source, ban, unban.

Owns: the per-source state behind bans (SECURITY-CASES 26, 33): failed-authentication counters,
the sources proven by a success, the bans they trigger or that an operator or another instance
places (`ban`, `ban_until`, `shared_ban`), and their events (`BanEvent`, `UnbanEvent`,
`UnbanReason`, `BanRecord`). Every method takes `now` (seconds, from a monotonic clock owned by
the shell) and answers with a value; the shell logs `BanEvent`/`UnbanEvent` and exports the sizes.

Never does: read a clock, sleep, log, touch sockets or parse SIP (the core hands over the source
IP). Stdlib only.

Memory: each table is an `OrderedDict` capped at `max_tracked_sources`; when full the oldest entry
is evicted (O(1) `popitem(last=False)`; a plain dict would rescan its deleted prefix on every
pop-front and go quadratic under a flood of distinct sources). Tables that are updated keep
least-recently-updated order with `move_to_end`, so `expire()` only pops from the front: every
call is amortised O(1) and nothing is ever sorted.

RFC 3261 §22 (a failed digest is the signal counted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from sipguard.policy.guard_settings import GuardSettings

# Two bans of one source whose ends differ by less than this are one ban (decided by two
# instances a few milliseconds apart, or our own heard back from the shared state).
SAME_BAN = 5.0


@dataclass(frozen=True, slots=True)
class BanEvent:
    """A source was banned until `until` after `failures` failures (log event `banned`); the
    core also reports an unban with `until` == 0."""

    ip: str
    until: float
    failures: int = 0


class UnbanReason(Enum):
    EXPIRED = "expired"
    EVICTED = "evicted"  # the ban table was full and this was the ban closest to expiry
    LIFTED = "lifted"  # an operator lifted it (admin API)


@dataclass(frozen=True, slots=True)
class UnbanEvent:
    """A ban ended (log event `unbanned`); `until` is when it was due to end."""

    ip: str
    until: float
    reason: UnbanReason


@dataclass(frozen=True, slots=True)
class BanRecord:
    """A ban in force, for the admin API: since and until on the clock of `now`."""

    ip: str
    since: float
    until: float
    failures: int  # failures that triggered it; 0 for a ban placed by an operator


class Bans:
    """Per-source failure counting and bans (sans-IO)."""

    def __init__(self, settings: GuardSettings) -> None:
        # ip -> ban end; insertion order is expiry order (constant duration, monotonic now).
        self._bans: OrderedDict[str, float] = OrderedDict()
        # ip -> (since, failures) of each ban, for `bans()`; kept off the hot path's table.
        self._ban_details: dict[str, tuple[float, int]] = {}
        # ip -> times of recent failures, ascending, at most _proven_failures long.
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        # ip -> end of the "someone authenticated here" period.
        self._proven: OrderedDict[str, float] = OrderedDict()
        # Unbans found lazily (is_banned) or by eviction, handed out by the next expire().
        self._pending: list[UnbanEvent] = []
        # Bound method fetched once: `od.get` looks the method up through the subclass each call.
        self._ban_get = self._bans.get
        self._evicted = 0
        self._exempted = 0
        self.configure(settings)

    def configure(self, settings: GuardSettings) -> None:
        """Apply new settings (config reload) keeping bans and counters; trims to a lower cap."""
        self._settings = settings
        self._proven_failures = settings.ban_failures_proven or 2 * settings.ban_failures
        self._exempt = settings.exempt_matcher()
        cap = settings.max_tracked_sources
        for table in (self._failures, self._proven):
            while len(table) > cap:
                table.popitem(last=False)
                self._evicted += 1
        while len(self._bans) > cap:
            self._evict_ban()

    @property
    def settings(self) -> GuardSettings:
        return self._settings

    def is_banned(self, ip: str, now: float) -> bool:
        """True while `ip` is banned. The hot path: one dict lookup for the unbanned majority."""
        until = self._ban_get(ip)
        if until is None:
            return False
        if now < until:
            return True
        del self._bans[ip]
        self._ban_details.pop(ip, None)
        self._note_unban(UnbanEvent(ip, until, UnbanReason.EXPIRED))
        return False

    def record_failure(self, ip: str, now: float) -> BanEvent | None:
        """Count a wrong answer to a challenge from `ip`; ban it when the count is reached.

        Sliding window, exact: the source is banned when `ban_failures` failures (or
        `ban_failures_proven` for a proven source, see `record_success`) fall within the last
        `ban_window` seconds; N failures spread over more than the window never ban. The log per
        source holds at most `ban_failures_proven` floats. never_ban sources are counted but not
        banned (`GuardSizes.exempted` counts the bans not placed)."""
        settings = self._settings
        if self.is_banned(ip, now):
            return None  # the core drops banned sources first; nothing more to learn
        failures = self._failures
        times = failures.get(ip)
        if times is None:
            if len(failures) >= settings.max_tracked_sources:
                failures.popitem(last=False)
                self._evicted += 1
            times = failures[ip] = [now]
        else:
            failures.move_to_end(ip)
            horizon = now - settings.ban_window
            while times and times[0] <= horizon:
                del times[0]
            times.append(now)
            if len(times) > self._proven_failures:
                del times[0]
        proven_until = self._proven.get(ip)
        if proven_until is not None and now < proven_until:
            threshold = self._proven_failures
        else:
            threshold = settings.ban_failures
        if len(times) < threshold or settings.ban_duration <= 0:
            return None  # below the threshold, or bans disabled (ban_duration 0)
        if self._exempt(ip):
            self._exempted += 1
            return None
        del failures[ip]
        return self._place_ban(ip, now, now + settings.ban_duration, len(times))

    def record_success(self, ip: str, now: float) -> None:
        """Note that a request from `ip` authenticated. It does NOT reset the failure counter.

        Why not reset: the counter is per source IP, and a success proves only that one user
        behind that IP knows one password. If a success wiped the count, an attacker holding any
        valid account (a customer, a leaked phone config) could interleave one good login per
        N-1 guesses and brute-force every other account from the same IP without ever being
        banned; a NAT office would give the same cover to anyone inside it.

        What it does instead: the source becomes *proven* for `proven_for` seconds (default 10
        min, so a small office whose phones refresh every few minutes stays proven), and a
        proven source is banned at `ban_failures_proven` failures per window (default twice
        `ban_failures`: 10) instead of `ban_failures` (5). One misconfigured phone behind a NAT
        retries its REGISTER on a timer (typically every 20-60 s, one failure per attempt: a
        few per minute), far below 10 per minute, so it does not get the office banned while
        the other phones authenticate; a runaway client or a guesser still is. The price is
        bounded: an attacker with a valid account gets at most 9 guesses per window instead of
        4 (a ban limits the guessing *rate* in any case; one pacing itself under the threshold
        is never banned). Offices that must never be banned belong in `never_ban`."""
        proven = self._proven
        if ip in proven:
            proven.move_to_end(ip)
        elif len(proven) >= self._settings.max_tracked_sources:
            proven.popitem(last=False)
            self._evicted += 1
        proven[ip] = now + self._settings.proven_for

    def ban(self, ip: str, now: float, duration: float | None = None) -> BanEvent | None:
        """Ban `ip` from outside the failure counter (an operator, another instance). None if
        the source is exempt or the duration is not positive (bans disabled)."""
        if duration is None:
            duration = self._settings.ban_duration
        if duration <= 0:
            return None
        if self._exempt(ip):
            self._exempted += 1
            return None
        self._failures.pop(ip, None)
        return self._place_ban(ip, now, now + duration, 0)

    def unban(self, ip: str) -> UnbanEvent | None:
        """Lift the ban of `ip` at once (an operator); None if it was not banned. Its failure
        count starts again from zero."""
        until = self._bans.pop(ip, None)
        self._ban_details.pop(ip, None)
        self._failures.pop(ip, None)
        if until is None:
            return None
        return UnbanEvent(ip, until, UnbanReason.LIFTED)

    def bans(self, now: float) -> list[BanRecord]:
        """The bans in force at `now`, oldest first (O(bans): for the admin API, not per packet)."""
        records = []
        for ip, until in self._bans.items():
            if until > now:
                since, failures = self._ban_details.get(ip, (now, 0))
                records.append(BanRecord(ip, since, until, failures))
        return records

    def shared_ban(self, ip: str, count: int, now: float) -> BanEvent | None:
        """The ban that `count` failures of `ip` across every instance (shared state) call for,
        by the threshold `record_failure` applies (proven sources, never_ban, bans off alike):
        a new one, or the one already in place here (so that the others learn it). Places
        nothing: the shell publishes it and every instance applies it with `ban_until`."""
        current = self._ban_get(ip)
        if current is not None and now < current:
            return BanEvent(ip, current, count)
        proven_until = self._proven.get(ip)
        proven = proven_until is not None and now < proven_until
        threshold = self._proven_failures if proven else self._settings.ban_failures
        if count < threshold or self._settings.ban_duration <= 0 or self._exempt(ip):
            return None
        return BanEvent(ip, now + self._settings.ban_duration, count)

    def ban_until(self, ip: str, until: float, now: float) -> BanEvent | None:
        """A ban placed elsewhere (another instance), ending at `until`: None if it is over,
        the source is exempt here, or a ban ending at most SAME_BAN seconds earlier is already
        in place (the same ban, decided on two instances or heard back)."""
        current = self._ban_get(ip)
        if not now < until or (current is not None and current >= until - SAME_BAN):
            return None
        if self._exempt(ip):
            self._exempted += 1
            return None
        self._failures.pop(ip, None)
        return self._place_ban(ip, now, until, 0)

    def active_bans(self) -> int:
        """Bans in the table (including expired ones not yet swept; `expire()` first if exact)."""
        return len(self._bans)

    def _place_ban(self, ip: str, now: float, until: float, failures: int) -> BanEvent:
        bans = self._bans
        if bans.pop(ip, None) is None and len(bans) >= self._settings.max_tracked_sources:
            self._evict_ban()
        bans[ip] = until
        self._ban_details[ip] = (now, failures)
        return BanEvent(ip, until, failures)

    def _evict_ban(self) -> None:
        ip, until = self._bans.popitem(last=False)
        self._ban_details.pop(ip, None)
        self._evicted += 1
        self._note_unban(UnbanEvent(ip, until, UnbanReason.EVICTED))

    def _note_unban(self, event: UnbanEvent) -> None:
        # Bounded like the tables: if the shell stops calling expire(), events are dropped.
        if len(self._pending) < self._settings.max_tracked_sources:
            self._pending.append(event)

    def expire(self, now: float) -> list[UnbanEvent]:
        """Forget what has expired; return the bans that ended (for the `unbanned` log).

        Each table is ordered by its expiry key, so this pops from the front until the first
        live entry: O(entries removed). Entries of a clock that stepped back are left to the
        lazy checks."""
        events = self._pending
        self._pending = []
        bans = self._bans
        while bans:
            ip, until = next(iter(bans.items()))
            if until > now:
                break
            bans.popitem(last=False)
            self._ban_details.pop(ip, None)
            events.append(UnbanEvent(ip, until, UnbanReason.EXPIRED))
        horizon = now - self._settings.ban_window
        failures = self._failures
        while failures:
            times = next(iter(failures.values()))
            if times and times[-1] > horizon:
                break
            failures.popitem(last=False)
        proven = self._proven
        while proven and next(iter(proven.values())) <= now:
            proven.popitem(last=False)
        return events
