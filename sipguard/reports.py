"""What the shell reports beside its decisions: connections, errors, the upstream pool, the
shared state and bans, each to the metrics and to a log line.

Owns: `Reports`, the part of the `Observer` that turns these reports into series and lines:
`upstream_error`, `bug` and `peer_unreachable` (each line within its event's budget),
`listener_error` (also told to systemd), `upstream_report` (health changes, failovers, the
per-upstream counts), `state_outage` / `state_errors`, and the bans (`banned`, with the
`sipguard_bans_active` gauge computed at scrape time from the bans remembered here, at most
`MAX_TRACKED_BANS`).

Never does: a SIP decision, or log a header value as the source: `src_ip`/`src_port` are
always the socket peer handed in by the shell (fail2ban-style tools ban on them). A `detail`
(of an upstream error, a state outage) is written as the caller gives it: the caller keeps
secrets out of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from structlog.typing import FilteringBoundLogger

from sipguard.events import (
    DEBUG,
    ERROR,
    INFO,
    WARNING,
    EventLog,
    Pacing,
)
from sipguard.metrics import Metrics
from sipguard.notify import Notifier
from sipguard.policy.sources import normalise_source_text
from sipguard.proxy.actions import Address, BanEvent
from sipguard.proxy.pool import Health
from sipguard.proxy.upstream_report import FailoverEvent, UpstreamReport

# Bans remembered for the `sipguard_bans_active` gauge; expired ones are pruned beyond this.
MAX_TRACKED_BANS: Final = 100_000


class Reports(EventLog):
    """The reports of the shell other than its decisions (see the module docstring).
    `notifier` (None: not under systemd) hears of a listener that failed; `clock` must be the
    clock whose `now` the server passes to the core, since ban expiry times (`BanEvent.until`)
    are on it."""

    def __init__(
        self,
        clock: Callable[[], float],
        notifier: Notifier | None,
        metrics: Metrics | None,
        logger: FilteringBoundLogger | None,
        pacing: Pacing,
    ) -> None:
        self.notifier = notifier
        self._clock = clock
        self._bans: dict[str, float] = {}
        super().__init__(metrics, logger, pacing)

    # -- connections and errors -------------------------------------------------------------

    def connection_opened(self, transport: str) -> None:
        if self.metrics is not None:
            self.metrics.connection_opened(transport)

    def connection_closed(self, transport: str) -> None:
        if self.metrics is not None:
            self.metrics.connection_closed(transport)

    def upstream_error(self, to: Address, detail: str) -> None:
        """Sending to the upstream `to` failed (connection refused, TLS error, ...)."""
        if self.metrics is not None:
            self.metrics.upstream_error()
        if ERROR in self._emit and (suppressed := self._allow("upstream_error")) is not None:
            self._log(
                ERROR,
                "upstream_error",
                upstream_ip=to.host,
                upstream_port=to.port,
                transport=to.transport.value,
                detail=detail,
                **({"suppressed": suppressed} if suppressed else {}),
            )

    def bug(self, exc: BaseException, source: Address) -> None:
        """An exception escaped the handling of one message from `source`: a defect."""
        if self.metrics is not None:
            self.metrics.bug()
        if ERROR in self._emit and (suppressed := self._allow("bug")) is not None:
            self._log(
                ERROR,
                "bug",
                src_ip=normalise_source_text(source.host),
                src_port=source.port,
                transport=source.transport.value,
                exc_type=type(exc).__name__,
                exc_info=exc,
                **({"suppressed": suppressed} if suppressed else {}),
            )

    def peer_unreachable(self, peer: Address, reason: str) -> None:
        """A datagram to `peer` came back ICMP unreachable and was no Forward of ours: a client
        that left before its reply. Ordinary traffic: counted, and logged at debug only."""
        if self.metrics is not None:
            self.metrics.peer_unreachable(reason)
        if DEBUG in self._emit and (suppressed := self._allow("peer_unreachable")) is not None:
            self._log(
                DEBUG,
                "peer_unreachable",
                src_ip=normalise_source_text(peer.host),
                src_port=peer.port,
                transport=peer.transport.value,
                reason=reason,
                **({"suppressed": suppressed} if suppressed else {}),
            )

    def listener_error(self, listener: str, detail: str) -> None:
        self._log(ERROR, "listener_error", listener=listener, detail=detail)
        if self.notifier is not None:
            self.notifier.status(f"listener {listener} failed: {detail}")

    # -- the upstream pool ------------------------------------------------------------------

    def upstream_report(self, report: UpstreamReport) -> None:
        """What the core's upstream side did since the last tick: health changes
        (`upstream_down` / `upstream_up` with the probe outcome as `reason`), failovers
        (`failover` with the Call-ID, both upstreams and the reason), the per-upstream request
        outcomes and the current health of each upstream (the gauge)."""
        metrics = self.metrics
        for event in report.events:
            if isinstance(event, FailoverEvent):
                self._log(
                    WARNING,
                    "failover",
                    call_id=event.call_id,
                    method=event.method,
                    upstream=event.from_uri,
                    next_upstream=event.to_uri or None,
                    reason=event.reason,
                )
            else:
                down = event.health is Health.DOWN
                self._log(
                    ERROR if down else WARNING,
                    "upstream_down" if down else "upstream_up",
                    upstream=event.member.uri,
                    reason=event.reason,
                )
        if report.lost:
            self._log(WARNING, "upstream_events_lost", count=report.lost)
        if metrics is None:
            return
        for uri, up in report.health:
            metrics.upstream_health(uri, up)
        for (uri, outcome), count in report.counts.items():
            metrics.upstream_requests_add(uri, outcome.value, count)

    # -- shared state -----------------------------------------------------------------------

    def state_outage(self, operation: str, detail: str) -> None:
        """The shared state stopped answering (`detail`: why, never a secret) or answers again
        (`detail` empty): one line each way, not one per failed call."""
        if detail:
            self._log(WARNING, "state_unreachable", operation=operation, detail=detail)
        else:
            self._log(INFO, "state_restored", operation=operation)

    def state_errors(self, count: int) -> None:
        if self.metrics is not None:
            self.metrics.state_failed(count)

    # -- bans -------------------------------------------------------------------------------

    def banned(self, event: BanEvent | Any) -> None:
        """The guard banned `event.ip` until `event.until` (after `event.failures` failures), or a
        ban ended: `until` == 0 (`actions.BanEvent`), or an event with a `reason` (the guard's
        `UnbanEvent`: expired, evicted; its `until` is when the ban was due to end)."""
        reason = getattr(event, "reason", None)
        if event.until and reason is None:
            if self.metrics is not None:
                self.metrics.banned()
            if len(self._bans) >= MAX_TRACKED_BANS:
                self._prune_bans()
            self._bans[event.ip] = event.until
            self._log(
                WARNING,
                "banned",
                src_ip=normalise_source_text(event.ip),
                failures=getattr(event, "failures", 0),
                until=event.until,
                ban_seconds=max(0, round(event.until - self._clock())),
            )
        else:
            self._bans.pop(event.ip, None)
            why = {} if reason is None else {"reason": str(getattr(reason, "value", reason))}
            self._log(INFO, "unbanned", src_ip=normalise_source_text(event.ip), **why)

    def active_bans(self) -> float:
        """Bans not yet expired (the `sipguard_bans_active` gauge, computed at scrape time)."""
        now = self._clock()
        return float(sum(1 for until in self._bans.values() if until > now))

    def _prune_bans(self) -> None:
        now = self._clock()
        self._bans = {ip: until for ip, until in self._bans.items() if until > now}
        while len(self._bans) >= MAX_TRACKED_BANS:  # all still active: forget the oldest
            del self._bans[next(iter(self._bans))]
