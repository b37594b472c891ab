"""Prometheus metrics of sipguard: the `Metrics` the observer moves, and serving it.

Owns: `Metrics`, every series of sipguard (declared in `sipguard.families`, with the decisions
counted by `sipguard.decisions`) and the rare events that move the rest: connections, upstream
errors and health, bugs, bans, reloads, suppressed log lines, the shared state's failures; and
`serve_metrics` / `serve_metrics_unix`, which answer `GET /metrics` and `GET /healthz` with it
through the HTTP endpoint of `sipguard.endpoint`.

Never does: put an unbounded value in a label. Every label value comes from a closed set: the
transport, the SIP method with an `other` bucket, the `Cause`, a status class, a result word, or a
trunk or upstream name from the config (capped, see `sipguard.labels`). Never an IP address, a
user, a Call-ID or any other header value: label cardinality is memory in Prometheus, and a label
fed by the peer would let any scanner grow it without bound.

Speed: the series a decision moves are plain counts (`sipguard.tally`, exposed by custom
collectors with the samples prometheus_client's own Counter and Histogram would give), moved by
`record_decision` (`sipguard.decisions`). The rare events keep prometheus_client's own classes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import Counter, Gauge
from prometheus_client.exposition import generate_latest

from sipguard import __version__
from sipguard.decisions import Decisions
from sipguard.endpoint import Responder, answer_http, serve_http, serve_http_unix
from sipguard.labels import MAX_UPSTREAM_SERIES, OTHER, UPSTREAM_OUTCOMES
from sipguard.proxy.actions import Transport


class Metrics(Decisions):
    """Every sipguard series, in a registry of its own.

    `record_decision` (`sipguard.decisions`) is the hot path (one call per core action); the
    methods here are rare events."""

    def __init__(self, *, version: str = __version__, trunks: Iterable[str] = ()) -> None:
        super().__init__(version=version, trunks=trunks)
        transports = [t.value for t in Transport]
        self._connections = {name: self.connections.labels(name) for name in transports}
        self._reload_ok = self.config_reloads.labels("ok")
        self._reload_error = self.config_reloads.labels("error")
        self._log_suppressed: dict[str, Counter] = {}
        self._upstream_labels: set[str] = set()
        self._peer_unreachable: dict[str, Counter] = {}

    def watch_trunk_calls(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Read `sipguard_trunk_calls_active` from `source` (trunk -> calls) at each scrape."""
        self.trunk_calls.source = source

    # -- rare events ------------------------------------------------------------------------

    def connection_opened(self, transport: str) -> None:
        self._connection_child(transport).inc()

    def connection_closed(self, transport: str) -> None:
        self._connection_child(transport).dec()

    def _connection_child(self, transport: str) -> Gauge:
        child = self._connections.get(transport)
        if child is None:  # not a Transport value: keep the label set closed
            child = self._connections.get(OTHER) or self.connections.labels(OTHER)
            self._connections[OTHER] = child
        return child

    def upstream_error(self) -> None:
        self.upstream_errors.inc()

    def _upstream_label(self, uri: str) -> str:
        known = self._upstream_labels
        if uri in known or len(known) < MAX_UPSTREAM_SERIES:
            known.add(uri)
            return uri
        return OTHER

    def set_upstreams(self, uris: Iterable[str]) -> None:
        """Create the upstream series of the configured upstreams (at start and reload)."""
        for uri in uris:
            label = self._upstream_label(uri)
            for outcome in UPSTREAM_OUTCOMES:
                self.upstream_requests.labels(label, outcome)

    def upstream_health(self, uri: str, up: bool) -> None:
        self.upstream_up.labels(self._upstream_label(uri)).set(1 if up else 0)

    def upstream_requests_add(self, uri: str, outcome: str, count: int) -> None:
        if outcome in UPSTREAM_OUTCOMES:
            self.upstream_requests.labels(self._upstream_label(uri), outcome).inc(count)

    def bug(self) -> None:
        self.bugs.inc()

    def peer_unreachable(self, reason: str) -> None:
        """`reason` comes from the closed set of `transport.udp.UNREACHABLE_REASONS`."""
        child = self._peer_unreachable.get(reason)
        if child is None:
            child = self._peer_unreachable[reason] = self.peer_unreachable_datagrams.labels(reason)
        child.inc()

    def config_reloaded(self, ok: bool) -> None:
        (self._reload_ok if ok else self._reload_error).inc()

    def banned(self) -> None:
        self.bans.inc()

    def state_failed(self, count: int) -> None:
        self.state_errors.inc(count)

    def log_suppressed(self, event: str) -> None:
        """A line of `event` (a name from the observer's closed vocabulary) was not written."""
        child = self._log_suppressed.get(event)
        if child is None:
            child = self._log_suppressed[event] = self.log_suppressed_lines.labels(event)
        child.inc()

    def scrape(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """Listen on `host:port` and answer `GET /metrics`, `GET /healthz`; 404 for anything else.

    One request per connection (HTTP/1.1 with `Connection: close`): a scraper needs no more."""
    return await serve_http(_answer_with(metrics), host, port)


async def serve_metrics_unix(metrics: Metrics, path: str) -> asyncio.Server:
    """The same on a Unix socket: a worker's series, read by its supervisor (`workers: N`)."""
    return await serve_http_unix(_answer_with(metrics), path)


def _answer_with(metrics: Metrics) -> Responder:
    async def respond(request_line: bytes) -> bytes:
        return answer_http(metrics, request_line)

    return respond
