"""Every series of sipguard, declared once, in the order a scrape writes them.

Owns: `Families`, the `CollectorRegistry` of one `Metrics` (its own, so tests and several
instances in one process never collide) and every family in it, with its name, help text and
label names; the buckets of the processing histogram; `sipguard_build_info`; and the collector
of `sipguard_trunk_calls_active`, read from the core's counts at scrape time.

Never does: move a series (`sipguard.decisions` counts the decisions, `sipguard.metrics` the
rare events), or create a child whose label value is not from a closed set (`sipguard.labels`).
The order of the declarations below is the order of the families in the scrape: keep it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from sipguard import __version__
from sipguard.labels import MAX_TRUNK_SERIES
from sipguard.tally import CounterFamily, Timings

# Per-message processing time of the core: ~5 µs for a keep-alive, ~10-50 µs for a parsed and
# edited INVITE, up to a few ms for a stalled interpreter. Prometheus' defaults (5 ms..10 s)
# would put every observation in the first bucket.
PROCESSING_BUCKETS: Final[tuple[float, ...]] = (
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
)


class _TrunkCalls:
    """`sipguard_trunk_calls_active{trunk}`, read at scrape time from the core's counts (a
    callable set by the shell): nothing is updated per call."""

    NAME = "sipguard_trunk_calls_active"
    HELP = "Calls of the trunk being set up or answered (per-trunk limits)."

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["trunk"])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["trunk"])
        if self.source is not None:
            for trunk, active in list(self.source().items())[:MAX_TRUNK_SERIES]:
                family.add_metric([trunk], active)
        yield family


class Families:
    """Every sipguard series, in a registry of its own.

    Series with small, known label sets are created up front (by the subclasses) so dashboards
    and alerts see zeros from the first scrape."""

    def __init__(self, *, version: str = __version__) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # in this order in the scrape
        self._declare_decisions(self.registry)
        self._declare_daemon(self.registry)
        self._declare_trunks_and_upstreams(self.registry)
        self.build_info.labels(version).set(1)

    def _declare_decisions(self, r: CollectorRegistry) -> None:
        """What the core decides about each message (moved by `sipguard.decisions`)."""
        self.requests = CounterFamily(
            "sipguard_requests",
            "Requests (and unparseable messages) decided by the core, by outcome (the Cause).",
            ["transport", "method", "outcome"],
            registry=r,
        )
        self.responses = CounterFamily(
            "sipguard_responses",
            "SIP responses: 'sent' were built by sipguard, 'relayed' were forwarded, "
            "'dropped' were received and not relayed (stray, or the 200 to a CANCEL).",
            ["direction", "status_class"],
            registry=r,
        )
        self.auth = CounterFamily(
            "sipguard_auth",
            "Digest authentication results: ok, challenged, stale (nonce), failed.",
            ["result"],
            registry=r,
        )
        self.acl_denied = CounterFamily(
            "sipguard_acl_denied",
            "Requests refused because no trunk's whitelist admits the source address.",
            ["transport"],
            registry=r,
        )
        self.parse_errors = CounterFamily(
            "sipguard_parse_errors", "Malformed messages.", ["transport"], registry=r
        )
        self.processing = Timings(
            "sipguard_processing_seconds",
            "Time the core took to decide about one message.",
            PROCESSING_BUCKETS,
            r,
        )

    def _declare_daemon(self, r: CollectorRegistry) -> None:
        """The rare events of the daemon (moved by `sipguard.metrics`)."""
        self.connections = Gauge(
            "sipguard_connections", "Open TCP/TLS connections.", ["transport"], registry=r
        )
        self.upstream_errors = Counter(
            "sipguard_upstream_errors", "Failures to send to the upstream.", registry=r
        )
        self.peer_unreachable_datagrams = Counter(
            "sipguard_peer_unreachable",
            "UDP datagrams to a peer that answered ICMP unreachable and matched no Forward "
            "(a client that left before its reply): ordinary traffic, by reason.",
            ["reason"],
            registry=r,
        )
        self.config_reloads = Counter(
            "sipguard_config_reloads", "Configuration reloads by result.", ["result"], registry=r
        )
        self.build_info = Gauge(
            "sipguard_build_info", "Always 1; the version as a label.", ["version"], registry=r
        )
        self.bans_active = Gauge("sipguard_bans_active", "Sources banned right now.", registry=r)
        self.bans = Counter(
            "sipguard_bans", "Bans imposed after failed authentications.", registry=r
        )
        self.bugs = Counter(
            "sipguard_bugs", "Exceptions that escaped the core (defects).", registry=r
        )
        self.state_errors = Counter(
            "sipguard_state_errors",
            "Calls to the shared state (Redis) that failed or were skipped during an outage.",
            registry=r,
        )
        self.log_suppressed_lines = Counter(
            "sipguard_log_suppressed",
            "Log lines not written because their event exceeded its rate (by event name).",
            ["event"],
            registry=r,
        )

    def _declare_trunks_and_upstreams(self, r: CollectorRegistry) -> None:
        """Per trunk and per upstream (label values from the config, capped): the trunks' series
        move with the decisions, the upstreams' with the reports of the pool."""
        self.admitted = CounterFamily(
            "sipguard_admitted",
            "Requests admitted, by trunk (names from the config).",
            ["trunk"],
            registry=r,
        )

        self.upstream_up = Gauge(
            "sipguard_upstream_up",
            "1 while the upstream (its configured URI) is up by its OPTIONS probes, else 0.",
            ["upstream"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "sipguard_upstream_requests",
            "Initial requests toward each upstream: forwarded (every attempt), failed_over "
            "(503/408/500 or unreachable: the next upstream was tried), timeout (no answer).",
            ["upstream", "outcome"],
            registry=r,
        )
        self.trunk_limited = CounterFamily(
            "sipguard_trunk_limited",
            "Requests refused by a trunk's limit (503), by trunk and limit.",
            ["trunk", "limit"],
            registry=r,
        )
        self.trunk_calls = _TrunkCalls()
        r.register(self.trunk_calls)
