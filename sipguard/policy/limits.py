"""Per-trunk limits: calls and registrations per second, and calls in progress (issue 17).

Owns: the per-trunk state behind `trunks[].limits` (`sipguard.settings.TrunkLimits`): a token
bucket for new INVITEs and one for REGISTERs, and the table of calls in progress, keyed by
dialog, that `concurrent_calls` caps. Every method takes `now` (seconds, the clock the shell
hands the core) and answers with a value: a `Decision` (`LimitVerdict` enum) for an admission,
a trunk name or `Released` values for what ended.

Never does: read a clock, parse SIP, log, count metrics or reply. The core hands over the trunk
name and the dialog's Call-ID and tags; the shell turns a refusal into `503` (RFC 3261 §21.5.4)
with `Retry-After` (§20.33) and exports the counters. Stdlib only.

How a call is counted (RFC 3261 §12: a dialog is Call-ID + the two tags):
- `admit_call` checks an initial INVITE after its trunk is known. Admitted, it holds a slot
  from that moment (a call being set up uses the tenant's capacity as much as an answered one,
  and counting only answered calls would let N+k simultaneous INVITEs through a cap of N).
  A retransmission (same dialog key and top Via branch) is admitted again for free.
- `established` (the 2xx to that INVITE, §13.2.2.4) marks it answered and notes the callee's tag.
- The slot is freed by `ended` (a BYE from either side, §15), `failed` (a final non-2xx to the
  INVITE, or its CANCEL, §9: only a call still being set up, so a failed re-INVITE never ends an
  answered call), or `expire`: a call never answered is released after `SETUP_TIMEOUT`, an
  answered one after the trunk's `max_call_duration`, so no count can stay stuck (lost BYE,
  crashed peer). Nothing counts longer than `max_call_duration` at a stretch, and a call that
  stopped counting is never counted again (a late 2xx or BYE changes nothing).

Memory: a capped trunk never holds more entries than its `concurrent_calls`, so it is always
counted exactly. Trunks without a cap share `max_uncapped` entries; beyond that a call is
admitted without being counted (`LimiterSizes.untracked`), so a flood cannot grow the table.
Deadlines sit in a heap with lazy deletion (an entry moved or released leaves a stale heap
item, skipped when popped); the heap is rebuilt when stale items outnumber live ones.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from sipguard.settings import TrunkLimits

# Seconds of tokens a per-second limit holds: a PBX may send two seconds of calls at once.
BURST_SECONDS = 2.0
# A call admitted and never answered nor failed stops counting after this: longer than Timer C
# (3 min, RFC 3261 §16.6 step 11), after which a proxy gives up on an unanswered INVITE.
SETUP_TIMEOUT = 200.0
# Entries shared by the trunks without concurrent_calls (~150 bytes each: ~15 MB at most).
MAX_UNCAPPED_CALLS = 100_000


class LimitVerdict(Enum):
    """The answer to an admission; the refusals' values are the `limit` metric label."""

    ADMITTED = "admitted"
    CALLS_PER_SECOND = "calls_per_second"
    CONCURRENT_CALLS = "concurrent_calls"
    REGISTRATIONS_PER_SECOND = "registrations_per_second"


REFUSALS: tuple[LimitVerdict, ...] = tuple(
    v for v in LimitVerdict if v is not LimitVerdict.ADMITTED
)


@dataclass(frozen=True, slots=True)
class Decision:
    """`retry_after`: whole seconds until the bucket holds a token again (per-second refusals,
    at least 1); None when no time can be promised (concurrent_calls, admitted)."""

    verdict: LimitVerdict
    retry_after: int | None = None

    @property
    def admitted(self) -> bool:
        return self.verdict is LimitVerdict.ADMITTED


ADMIT = Decision(LimitVerdict.ADMITTED)
OVER_CONCURRENT = Decision(LimitVerdict.CONCURRENT_CALLS)


class DialogKey(NamedTuple):
    """A call as the caller named it: Call-ID and the From-tag of its INVITE (RFC 3261 §12)."""

    call_id: bytes
    caller_tag: bytes


class ReleaseReason(Enum):
    SETUP_TIMEOUT = "setup_timeout"  # admitted, never answered nor failed
    MAX_CALL_DURATION = "max_call_duration"  # answered, no BYE within max_call_duration


@dataclass(frozen=True, slots=True)
class Released:
    """A call `expire` stopped counting (the shell logs it: a BYE was lost somewhere)."""

    trunk: str
    call_id: bytes
    reason: ReleaseReason


@dataclass(frozen=True, slots=True)
class TrunkUsage:
    """One trunk's counters since start, for the admin API and metrics."""

    active: int
    calls_admitted: int
    registrations_admitted: int
    refused: Mapping[LimitVerdict, int]


@dataclass(frozen=True, slots=True)
class LimiterSizes:
    calls: int  # entries in the table of calls
    untracked: int  # calls admitted uncounted because the shared table was full


class _Bucket:
    """Token bucket: `rate` tokens per second, at most `BURST_SECONDS` worth."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate * BURST_SECONDS)
        self.tokens = self.burst  # a new bucket is full
        self.stamp: float | None = None

    def take(self, now: float) -> int | None:
        """None if a token was taken; else the whole seconds until one is there (>= 1)."""
        stamp = self.stamp
        if stamp is None:
            self.stamp = now
        elif now > stamp:  # a clock that steps back must not mint tokens
            self.tokens = min(self.burst, self.tokens + (now - stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


class _Trunk:
    """One trunk's limits, buckets and counters."""

    __slots__ = (
        "active",
        "calls",
        "calls_admitted",
        "configured",
        "limits",
        "name",
        "refused",
        "registrations",
        "registrations_admitted",
    )

    def __init__(self, name: str, limits: TrunkLimits) -> None:
        self.name = name
        self.configured = True  # False: removed by a reload, kept while its calls last
        self.active = 0
        self.calls_admitted = 0
        self.registrations_admitted = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.limits = limits
        self.calls: _Bucket | None = None
        self.registrations: _Bucket | None = None
        self.apply(limits)

    def apply(self, limits: TrunkLimits) -> None:
        """New limits; a bucket whose rate is unchanged keeps its tokens."""
        old = self.limits
        self.limits = limits
        if limits.calls_per_second is None:
            self.calls = None
        elif self.calls is None or old.calls_per_second != limits.calls_per_second:
            self.calls = _Bucket(limits.calls_per_second)
        if limits.registrations_per_second is None:
            self.registrations = None
        elif (
            self.registrations is None
            or old.registrations_per_second != limits.registrations_per_second
        ):
            self.registrations = _Bucket(limits.registrations_per_second)

    def refuse(self, verdict: LimitVerdict, retry_after: int | None = None) -> Decision:
        self.refused[verdict] += 1
        return OVER_CONCURRENT if retry_after is None else Decision(verdict, retry_after)


class _Call:
    """One counted call. `branch`: top Via branch of the INVITE that holds the slot."""

    __slots__ = ("branch", "callee_tag", "deadline", "trunk")

    def __init__(self, trunk: _Trunk, branch: bytes, deadline: float) -> None:
        self.trunk = trunk
        self.branch = branch
        self.callee_tag: bytes | None = None  # set once answered
        self.deadline = deadline


class TrunkLimiter:
    """Per-trunk rates and calls in progress (sans-IO). `configure` on every (re)load."""

    def __init__(self, max_uncapped: int = MAX_UNCAPPED_CALLS) -> None:
        self._max_uncapped = max_uncapped
        self._trunks: dict[str, _Trunk] = {}
        self._calls: dict[DialogKey, _Call] = {}
        self._deadlines: list[tuple[float, DialogKey]] = []
        self._untracked = 0

    def configure(self, limits: Mapping[str, TrunkLimits]) -> None:
        """The trunks of a new config. Calls in progress stay counted (a removed trunk's until
        they end); a rate that did not change keeps its bucket."""
        trunks = self._trunks
        for name, trunk_limits in limits.items():
            state = trunks.get(name)
            if state is None:
                trunks[name] = _Trunk(name, trunk_limits)
            else:
                state.configured = True
                state.apply(trunk_limits)
        for name in [n for n in trunks if n not in limits]:
            if trunks[name].active:
                trunks[name].configured = False
            else:
                del trunks[name]

    # -- admission ------------------------------------------------------------------------------

    def admit_call(self, trunk: str, key: DialogKey, branch: bytes, now: float) -> Decision:
        """An initial INVITE (no To-tag) of `trunk`, about to be forwarded."""
        state = self._trunks.get(trunk)
        if state is None or not state.configured:
            return ADMIT  # a trunk not (or no longer) in the config
        call = self._calls.get(key)
        if call is not None and call.branch == branch and call.trunk is state:
            return ADMIT  # a retransmission: already counted (RFC 3261 §17.2.1)
        cap = state.limits.concurrent_calls
        if call is None and cap is not None and state.active >= cap:
            return state.refuse(LimitVerdict.CONCURRENT_CALLS)
        if state.calls is not None:
            wait = state.calls.take(now)
            if wait is not None:
                return state.refuse(LimitVerdict.CALLS_PER_SECOND, wait)
        state.calls_admitted += 1
        if call is not None:
            call.branch = branch  # a new INVITE transaction of a call already counted
        else:
            deadline = now + min(SETUP_TIMEOUT, state.limits.max_call_duration)
            self._track(key, state, branch, deadline)
        return ADMIT

    def admit_registration(self, trunk: str, now: float) -> Decision:
        """A REGISTER of `trunk`, about to be forwarded."""
        state = self._trunks.get(trunk)
        if state is None or not state.configured:
            return ADMIT
        if state.registrations is not None:
            wait = state.registrations.take(now)
            if wait is not None:
                return state.refuse(LimitVerdict.REGISTRATIONS_PER_SECOND, wait)
        state.registrations_admitted += 1
        return ADMIT

    # -- the life of a call ---------------------------------------------------------------------

    def established(self, key: DialogKey, callee_tag: bytes, now: float) -> None:
        """A 2xx to an INVITE (RFC 3261 §13.2.2.4): the call being set up is answered. The
        first 2xx counts; a retransmission, a forked 2xx, the 2xx to a re-INVITE and the 2xx
        of a call no longer counted (released, or admitted while the table was full) change
        nothing, so that no answer can extend or revive a count."""
        call = self._calls.get(key)
        if call is not None and call.callee_tag is None:
            call.callee_tag = callee_tag
            self._move(key, call, now + call.trunk.limits.max_call_duration)

    def ended(self, call_id: bytes, from_tag: bytes, to_tag: bytes) -> str | None:
        """A BYE from either side (RFC 3261 §15): the caller's (From-tag = caller) or the
        callee's (To-tag = caller). The other tag must be the callee's, once known. Returns the
        trunk whose call ended, or None."""
        for caller, callee in ((from_tag, to_tag), (to_tag, from_tag)):
            key = DialogKey(call_id, caller)
            call = self._calls.get(key)
            if call is not None and call.callee_tag in (None, callee):
                self._release(key, call)
                return call.trunk.name
        return None

    def failed(self, key: DialogKey) -> str | None:
        """A final non-2xx to the INVITE, or its CANCEL: frees a call still being set up (an
        answered call is left alone: a failed re-INVITE does not end it). Returns the trunk."""
        call = self._calls.get(key)
        if call is None or call.callee_tag is not None:
            return None
        self._release(key, call)
        return call.trunk.name

    def expire(self, now: float) -> list[Released]:
        """Release every call past its deadline (a lost BYE, a crashed peer)."""
        released: list[Released] = []
        deadlines = self._deadlines
        calls = self._calls
        while deadlines and deadlines[0][0] <= now:
            deadline, key = heapq.heappop(deadlines)
            call = calls.get(key)
            if call is None or call.deadline != deadline:
                continue  # stale: released or moved since
            self._release(key, call)
            reason = (
                ReleaseReason.SETUP_TIMEOUT
                if call.callee_tag is None
                else ReleaseReason.MAX_CALL_DURATION
            )
            released.append(Released(call.trunk.name, key.call_id, reason))
        return released

    # -- reading --------------------------------------------------------------------------------

    def active(self, trunk: str) -> int:
        state = self._trunks.get(trunk)
        return 0 if state is None else state.active

    def usage(self, trunk: str) -> TrunkUsage | None:
        state = self._trunks.get(trunk)
        if state is None:
            return None
        return TrunkUsage(
            state.active,
            state.calls_admitted,
            state.registrations_admitted,
            dict(state.refused),
        )

    def sizes(self) -> LimiterSizes:
        return LimiterSizes(calls=len(self._calls), untracked=self._untracked)

    # -- the table ------------------------------------------------------------------------------

    def _track(self, key: DialogKey, state: _Trunk, branch: bytes, deadline: float) -> None:
        if state.limits.concurrent_calls is None and len(self._calls) >= self._max_uncapped:
            self._untracked += 1
            return
        self._calls[key] = _Call(state, branch, deadline)
        state.active += 1
        heapq.heappush(self._deadlines, (deadline, key))

    def _move(self, key: DialogKey, call: _Call, deadline: float) -> None:
        call.deadline = deadline
        heapq.heappush(self._deadlines, (deadline, key))
        self._compact()

    def _release(self, key: DialogKey, call: _Call) -> None:
        del self._calls[key]
        state = call.trunk
        state.active -= 1
        if not state.configured and not state.active:
            self._trunks.pop(state.name, None)
        self._compact()

    def _compact(self) -> None:
        """Drop stale heap items once they are the majority: the heap stays O(calls)."""
        if len(self._deadlines) > 2 * len(self._calls) + 64:
            self._deadlines = [(c.deadline, k) for k, c in self._calls.items()]
            heapq.heapify(self._deadlines)
