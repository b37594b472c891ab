"""The log events of the daemon: their names, their levels, and how many lines each may write.

Owns: the event vocabulary of the decisions (`EVENTS`: which `Cause` is which log event at which
level, and `DROPPED_RESPONSE_EVENT`), the levels, and `EventLog`, the base of the `Observer`: the
logger's methods bound once per level that is on (`set_logger`), the causes whose lines the
level lets through, and the budget of each event (`Pacing`: `DEFAULT_LOG_RATE` lines per
second, bursts of `DEFAULT_LOG_BURST`) so a flood cannot fill the disk; the next line written
carries `suppressed=N` and the metric `sipguard_log_suppressed_total{event}` counts the rest.

Never does: decide what a line says (the observer and its reports build the fields), or
configure logging (`sipguard.logs`). Event names are a stable interface (README "Log events").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from structlog.typing import FilteringBoundLogger

from sipguard.labels import DROPPED_RESPONSE_CAUSES
from sipguard.metrics import Metrics
from sipguard.proxy.actions import Cause

DEBUG: Final = 10
INFO: Final = 20
WARNING: Final = 30
ERROR: Final = 40

# Cause -> (event name, level). Event names are a stable interface (README "Log events").
EVENTS: Final[dict[Cause, tuple[str, int]]] = {
    Cause.ADMITTED_IP: ("admitted", INFO),
    Cause.ADMITTED_DIGEST: ("admitted", INFO),
    Cause.IN_DIALOG: ("in_dialog", DEBUG),
    Cause.CHALLENGED: ("challenged", INFO),
    Cause.STALE_NONCE: ("challenged", INFO),  # cause=stale_nonce tells them apart
    Cause.AUTH_FAILED: ("auth_failed", WARNING),
    Cause.ACL_DENIED: ("acl_denied", WARNING),
    Cause.PARSE_ERROR: ("parse_error", INFO),
    Cause.TOO_LARGE: ("too_large", INFO),
    Cause.TOO_MANY_HOPS: ("too_many_hops", INFO),
    Cause.LOOP_DETECTED: ("loop_detected", WARNING),  # usually a routing misconfiguration
    Cause.BAD_EXTENSION: ("bad_extension", INFO),
    Cause.UNSUPPORTED_URI_SCHEME: ("unsupported_uri_scheme", INFO),
    Cause.OPTIONS_ANSWERED: ("options_answered", DEBUG),  # providers ping every few seconds
    Cause.ACK_ABSORBED: ("ack_absorbed", DEBUG),
    Cause.CANCEL_FORWARDED: ("cancel_forwarded", INFO),
    Cause.STRAY: ("stray", DEBUG),
    Cause.BANNED: ("ban_dropped", DEBUG),  # the ban itself is the `banned` event
    Cause.RATE_LIMITED: ("rate_limited", WARNING),
    Cause.TRUNK_LIMITED: ("trunk_limited", WARNING),
    Cause.SCANNER: ("scanner_dropped", WARNING),
    Cause.KEEPALIVE: ("keepalive", DEBUG),
    Cause.FROM_UPSTREAM: ("from_upstream", DEBUG),
    Cause.RESPONSE: ("response_relayed", DEBUG),
    Cause.UPSTREAM_ERROR: ("upstream_unavailable", WARNING),
    Cause.FAILOVER: ("failover_sent", DEBUG),  # the `failover` event is the decision's line
    Cause.PROBE: ("probe", DEBUG),
    Cause.STATE_ERROR: ("state_unavailable", WARNING),
    Cause.BUG: ("bug_dropped", DEBUG),  # `bug()` writes the error line with the traceback
}

# A response received and not relayed (`labels.is_dropped_response`), whatever its cause.
DROPPED_RESPONSE_EVENT: Final = ("response_dropped", DEBUG)

# Lines per second per event name, and the burst allowed above it (see the module docstring).
DEFAULT_LOG_RATE: Final = 100.0
DEFAULT_LOG_BURST: Final = 1000.0


@dataclass(frozen=True, slots=True)
class Pacing:
    """How many lines each event may write: `rate` per second (None: no limit), with bursts
    of `burst`, timed on `monotonic`."""

    rate: float | None = DEFAULT_LOG_RATE
    burst: float = DEFAULT_LOG_BURST
    monotonic: Callable[[], float] = time.monotonic


class _Budget:
    """Token bucket for the lines of one event name."""

    __slots__ = ("stamp", "suppressed", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.suppressed = 0


class EventLog:
    """Writes the lines of events at their level, each within its budget (see the module
    docstring). `metrics` (None: not configured) counts the lines not written."""

    def __init__(
        self, metrics: Metrics | None, logger: FilteringBoundLogger | None, pacing: Pacing
    ) -> None:
        self.metrics = metrics
        self._pacing = pacing
        self._budgets: dict[str, _Budget] = {}
        self._emit: dict[int, Callable[..., Any]] = {}
        # The causes whose decisions may write a line at the level set: the others are only
        # counted, at the price of one set lookup (see `Observer.decision`).
        self._logged: frozenset[Cause] = frozenset()
        self.set_logger(logger)

    def set_logger(self, logger: FilteringBoundLogger | None) -> None:
        """Use `logger` from now on (after `configure_logging` ran again on a reload)."""
        self.logger = logger
        self._emit = {}
        self._logged = frozenset()
        if logger is None:
            return
        is_enabled = getattr(logger, "is_enabled_for", lambda level: True)
        methods = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}
        # Bound once: the per-call attribute lookup through structlog's lazy proxy costs ~0.5 µs;
        # a level that is off has no emitter, so its fields are never even built.
        for level, name in methods.items():
            if is_enabled(level):
                self._emit[level] = getattr(logger, name)
        self._logged = frozenset(
            cause
            for cause, (_, level) in EVENTS.items()
            if level in self._emit
            or (cause in DROPPED_RESPONSE_CAUSES and DROPPED_RESPONSE_EVENT[1] in self._emit)
        )

    def _allow(self, event: str) -> int | None:
        """None: drop this line; else the number of lines of `event` dropped since the last."""
        pacing = self._pacing
        if pacing.rate is None:
            return 0
        now = pacing.monotonic()
        budget = self._budgets.get(event)
        if budget is None:
            budget = self._budgets[event] = _Budget(pacing.burst, now)
        else:
            budget.tokens = min(pacing.burst, budget.tokens + (now - budget.stamp) * pacing.rate)
            budget.stamp = now
        if budget.tokens < 1.0:
            budget.suppressed += 1
            if self.metrics is not None:
                self.metrics.log_suppressed(event)
            return None
        budget.tokens -= 1.0
        suppressed, budget.suppressed = budget.suppressed, 0
        return suppressed

    def _log(self, level: int, event: str, **fields: Any) -> None:
        emit = self._emit.get(level)
        if emit is not None:
            emit(event, **fields)
