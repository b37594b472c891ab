"""What one core decision moves: the hot path of the metrics.

Owns: `Decisions.record_decision`, called once per action the core returns (from
`Observer.decision`), and the plans it keeps: the first decision of a kind resolves its series
once (`_Plan`: the request, response, auth, ACL, parse-error, per-trunk series it moves, and
whether it is timed); after that a decision is one dict lookup, one `+= 1` per series and one
histogram bucket: ~6 calls instead of ~35 through `Counter.inc()`/`Histogram.observe()`
(scripts/bench_observe). Also the per-trunk series (`admitted`, `trunk_limited`), created for the
configured trunks at start and reload (`set_trunks`).

Never does: put an unbounded value in a label. The method and status of a decision come from the
peer: their labels are closed sets (`sipguard.labels`), the trunk labels are capped, and the
plans are bounded by `MAX_PLANS`. Never an IP address, a user, a Call-ID or any other header
value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from sipguard import __version__
from sipguard.families import Families
from sipguard.labels import (
    AUTH_RESULT,
    DIRECTIONS,
    DROPPED_RESPONSE_CAUSES,
    MAX_TRUNK_SERIES,
    OTHER,
    STATUS_CLASSES,
    TRUNK_LIMITS,
    method_label,
    status_class_of,
)
from sipguard.proxy.actions import (
    ACCOMPANYING_CAUSES,
    Action,
    Address,
    Cause,
    Drop,
    Forward,
    Reply,
    Transport,
)
from sipguard.tally import Series

_ADMITTED: Final = frozenset({Cause.ADMITTED_IP, Cause.ADMITTED_DIGEST})


# What `Metrics.record_decision` keys its plans by: the action's type, its cause, the peer's
# transport, and the Info fields the series depend on (method, status, trunk, and the detail of
# a trunk limit). The method and status come from the peer: the plans are capped.
DecisionKey = tuple[type, Cause, Transport, str, int, str, str]
MAX_PLANS: Final = 4096


class _Plan(NamedTuple):
    """The series one kind of decision moves (each by one), and whether its processing time
    goes to the histogram."""

    series: tuple[Series, ...]
    timed: bool


class Decisions(Families):
    """The series of the core's decisions, and `record_decision`, the hot path (one call per
    core action). `requests_total` (3 x 15 x 25 possible children) is created per label
    combination on first use and cached."""

    def __init__(self, *, version: str = __version__, trunks: Iterable[str] = ()) -> None:
        super().__init__(version=version)
        self._responses = {
            (d, c): self.responses.labels(d, c)
            for d in DIRECTIONS
            for c in (*STATUS_CLASSES, OTHER)
        }
        self._auth = {cause: self.auth.labels(result) for cause, result in AUTH_RESULT.items()}
        self._acl_denied = {t: self.acl_denied.labels(t.value) for t in Transport}
        self._parse_errors = {t: self.parse_errors.labels(t.value) for t in Transport}
        self._plans: dict[DecisionKey, _Plan] = {}
        self._admitted: dict[str, Series] = {}
        self._trunk_limited: dict[tuple[str, str], Series] = {}
        self.set_trunks(trunks)

    # -- hot path ---------------------------------------------------------------------------

    def record_decision(self, action: Action, source: Address, elapsed: float) -> None:
        """Count one core action about a message from `source` (the socket peer).

        `elapsed` (seconds the core took) goes to the processing histogram, except for a Reply
        that accompanies a Forward of the same message (`Reply.accompanies`).
        Responses are counted in `responses_total`, requests in `requests_total`.

        One dict lookup finds the plan of this kind of decision (see `_plan`); the series it
        names move by one each."""
        info = action.info
        cause = action.cause
        key = (
            type(action),
            cause,
            source.transport,
            info.method,
            info.status,
            info.trunk,
            info.detail if cause is Cause.TRUNK_LIMITED else "",
        )
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(key)
        for series in plan.series:
            series.value += 1
        if plan.timed:
            self.processing.observe(elapsed)

    def _plan(self, key: DecisionKey) -> _Plan:
        """What a decision of this `key` moves: the series and whether it is timed. Built once
        per key (the labels are bounded here) and kept; the cache is bounded by `MAX_PLANS`,
        since the method and status in the key come from the peer."""
        plan = self._classify(key)
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _classify(self, key: DecisionKey) -> _Plan:
        kind, cause, transport, method, status, trunk, detail = key
        status_label = status_class_of(status)
        if kind is Reply:
            sent = self._responses["sent", status_label]
            if cause in ACCOMPANYING_CAUSES:
                return _Plan((sent,), timed=False)  # the Forward of the same message decides
            series = [sent]
        elif cause is Cause.RESPONSE:
            relayed = (self._responses["relayed", status_label],) if kind is Forward else ()
            return _Plan(relayed, timed=True)
        elif kind is Drop and cause in DROPPED_RESPONSE_CAUSES and 100 <= status <= 699:
            return _Plan((self._responses["dropped", status_label],), timed=True)
        else:
            series = []
        series.append(self.requests.labels(transport.value, method_label(method), cause.value))
        if cause in _ADMITTED:
            series.append(self._trunk_series(trunk))
        auth = self._auth.get(cause)
        if auth is not None:
            series.append(auth)
        elif cause is Cause.ACL_DENIED:
            series.append(self._acl_denied[transport])
        elif cause is Cause.PARSE_ERROR:
            series.append(self._parse_errors[transport])
        elif cause is Cause.TRUNK_LIMITED:
            series.append(self._trunk_limited_series(trunk, detail))
        return _Plan(tuple(series), timed=True)

    def _trunk_limited_series(self, trunk: str, limit: str) -> Series:
        key = (trunk, limit)
        series = self._trunk_limited.get(key)
        if series is None:
            label = limit if limit in TRUNK_LIMITS else OTHER
            if not trunk or len(self._trunk_limited) >= MAX_TRUNK_SERIES * len(TRUNK_LIMITS):
                trunk = OTHER
            series = self._trunk_limited[key] = self.trunk_limited.labels(trunk, label)
        return series

    def _trunk_series(self, trunk: str) -> Series:
        series = self._admitted.get(trunk)
        if series is None:
            label = trunk if trunk and len(self._admitted) < MAX_TRUNK_SERIES else OTHER
            series = self._admitted.get(label)
            if series is None:
                series = self.admitted.labels(label)
            self._admitted[label] = series
        return series

    def set_trunks(self, names: Iterable[str]) -> None:
        """Create the `admitted_total` series of the configured trunks (at start and reload).

        Series of trunks removed from the config stay until restart: a counter that vanishes
        and comes back would look like a reset to `rate()`."""
        for name in names:
            self._trunk_series(name)
