"""The closed label sets of sipguard's metrics, and the mapping of a decision to them.

Owns: every label value a series may take that does not come from the config: the SIP methods
(`METHODS`, with an `other` bucket), the status classes, the results of digest authentication
(`AUTH_RESULTS`, and `AUTH_RESULT`: which `Cause` is which), the directions of a response, the
outcomes of an upstream request, the limits of a trunk; the caps on the labels that do come from
the config (trunks, upstreams); and which decisions are responses that end here
(`is_dropped_response`, read by the metrics and by the observer's log lines alike).

Never does: hold a series or a count (`sipguard.families`, `sipguard.decisions`), or let a value
from the peer through as a label: a method not in `METHODS`, a status outside 100..699, is
`other`. Label cardinality is memory in Prometheus.

RFC 3261 §7.1 (methods are case-sensitive tokens), §7.2 (status classes 1xx..6xx), §27.4 (the
registered methods listed in `METHODS`, with RFC 3262, 3265, 3311, 3428, 3515, 3903, 6086).
"""

from __future__ import annotations

from typing import Final

from sipguard.proxy.actions import Action, Cause, Drop

# RFC 3261 §27.4 and the extensions sipguard meets in the field. Anything else is "other", so a
# peer inventing methods cannot create series (RFC 3261 §7.1: methods are case-sensitive).
METHODS: Final[tuple[str, ...]] = (
    "REGISTER",
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "INFO",
    "UPDATE",
    "PRACK",
    "PUBLISH",
)
OTHER: Final = "other"
_METHOD_LABEL: Final[dict[str, str]] = {m: m for m in METHODS}

# RFC 3261 §7.2: six status classes; a reply we cannot classify is "other".
STATUS_CLASSES: Final[tuple[str, ...]] = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")

AUTH_RESULTS: Final[tuple[str, ...]] = ("ok", "challenged", "stale", "failed")
AUTH_RESULT: Final[dict[Cause, str]] = {
    Cause.ADMITTED_DIGEST: "ok",
    Cause.CHALLENGED: "challenged",
    Cause.STALE_NONCE: "stale",
    Cause.AUTH_FAILED: "failed",
}
# A Reply that accompanies a Forward of the same message (`Reply.accompanies`: the 200 to a CANCEL
# we relay, RFC 3261 §16.10) is counted only as a response sent: the Forward is the decision.
# A Drop with one of these causes and a status is a response that ends here: the next hop's 200
# to a CANCEL we already answered (§16.10), a response whose Via is not ours (§16.7 step 2).
DROPPED_RESPONSE_CAUSES: Final = frozenset(
    {Cause.CANCEL_FORWARDED, Cause.STRAY, Cause.PROBE, Cause.FAILOVER}
)
# `sipguard_upstream_requests_total{outcome}` (issue 14); upstream labels are configured URIs.
UPSTREAM_OUTCOMES: Final[tuple[str, ...]] = ("forwarded", "failed_over", "timeout")
MAX_UPSTREAM_SERIES: Final = 64  # configured upstreams beyond this share the `other` label
DIRECTIONS: Final[tuple[str, ...]] = ("sent", "relayed", "dropped")

# Trunk names come from the config, so they are bounded by it; the cap only protects against a
# caller passing something else. Beyond it the label is "other".
MAX_TRUNK_SERIES: Final = 1000

# The `limit` label of `sipguard_trunk_limited_total`: the refusals of `policy.limits.LimitVerdict`
# (the core puts the value in `Info.detail`); anything else is "other".
TRUNK_LIMITS: Final[tuple[str, ...]] = (
    "calls_per_second",
    "concurrent_calls",
    "registrations_per_second",
)


def method_label(method: str) -> str:
    """The `method` label of a request: a registered method name, else "other"."""
    return _METHOD_LABEL.get(method, OTHER)


def status_class(action: Action) -> str:
    """`1xx`..`6xx` from the status the core put in `info.status`, else "other" (never read
    from the bytes: the shell makes no SIP decision)."""
    return status_class_of(action.info.status)


def status_class_of(status: int) -> str:
    if 100 <= status <= 699:
        return STATUS_CLASSES[status // 100 - 1]
    return OTHER


def is_dropped_response(action: Action) -> bool:
    """A response received and not relayed (see `DROPPED_RESPONSE_CAUSES`)."""
    return (
        type(action) is Drop
        and action.cause in DROPPED_RESPONSE_CAUSES
        and 100 <= action.info.status <= 699
    )
