"""What the upstream side tells the shell and the admin API, as values.

Owns: `UpstreamReport` (events, attempt counts and health since the last report: the shell's
logs and metrics), `UpstreamStatus` (one upstream now: `GET /v1/upstreams`), `FailoverEvent`,
`UpstreamEvent`, `Outcome` (the `outcome` label of `sipguard_upstream_requests_total`, a bounded
set) and `MAX_EVENTS`. `proxy.failover` fills them.

Never does: decide anything, count, log or export metrics: these are the values handed over.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sipguard.proxy.pool import HealthChange, MemberStatus

__all__ = [
    "MAX_EVENTS",
    "FailoverEvent",
    "Outcome",
    "UpstreamEvent",
    "UpstreamReport",
    "UpstreamStatus",
]

MAX_EVENTS = 10000  # events kept between two drains; beyond, they are counted as lost


class Outcome(StrEnum):
    """`sipguard_upstream_requests_total{outcome}`: how each attempt toward an upstream went."""

    FORWARDED = "forwarded"  # an initial request (or a failover of one) was sent to it
    FAILED_OVER = "failed_over"  # it answered 503/408/500 or could not be reached: next one
    TIMEOUT = "timeout"  # it did not answer at all (failed over, or the client got 408)


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """A request left `from_uri` for `to_uri` ("" when no candidate was left)."""

    call_id: str
    method: str
    from_uri: str
    to_uri: str
    reason: str  # "503", "408", "500", "timeout", "transport_error"


UpstreamEvent = HealthChange | FailoverEvent


@dataclass(frozen=True, slots=True)
class UpstreamReport:
    """What happened since the last report, for the shell's logs and metrics."""

    events: list[UpstreamEvent]
    counts: dict[tuple[str, Outcome], int]  # (configured URI, outcome) -> attempts
    health: list[tuple[str, bool]]  # every upstream's URI and whether it is up now
    lost: int  # events not kept (more than MAX_EVENTS between two reports)


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """One upstream now, for the admin API: its health and probes, its attempts since start."""

    health: MemberStatus
    counts: dict[Outcome, int]
