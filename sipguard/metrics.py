"""Prometheus metrics of sipguard, and the tiny HTTP endpoint that serves them.

Owns: the `Metrics` collection (its own `CollectorRegistry`, so tests and several instances in one
process never collide), the mapping from a core decision (`Action` + the socket peer) to the
series it moves, and `serve_metrics`, an asyncio handler for `GET /metrics` (Prometheus text
exposition format 0.0.4) and `GET /healthz`.

Never does: put an unbounded value in a label. Every label value comes from a closed set: the
transport, the SIP method with an `other` bucket, the `Cause`, a status class, a result word, or a
trunk name from the config (capped, see `MAX_TRUNK_SERIES`). Never an IP address, a user, a
Call-ID or any other header value: label cardinality is memory in Prometheus, and a label fed by
the peer would let any scanner grow it without bound.

Speed: the series a decision moves are plain counts (`sipguard.tally`, exposed by custom
collectors with the samples prometheus_client's own Counter and Histogram would give). The
first decision of a kind resolves its series once (`_Plan`); after that `record_decision` is one
dict lookup, one `+= 1` per series and one histogram bucket: ~6 calls instead of ~35 through
`Counter.inc()`/`Histogram.observe()` (scripts/bench_observe). The rare events keep
prometheus_client's own classes.

RFC 3261 §7.1 (methods are case-sensitive tokens), §7.2 (status classes 1xx..6xx), §27.4 (the
registered methods listed in `METHODS`, with RFC 3262, 3265, 3311, 3428, 3515, 3903, 6086).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Final, NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from sipguard import __version__
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
from sipguard.tally import CounterFamily, Series, Timings

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
_AUTH_RESULT: Final[dict[Cause, str]] = {
    Cause.ADMITTED_DIGEST: "ok",
    Cause.CHALLENGED: "challenged",
    Cause.STALE_NONCE: "stale",
    Cause.AUTH_FAILED: "failed",
}
_ADMITTED: Final = frozenset({Cause.ADMITTED_IP, Cause.ADMITTED_DIGEST})

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

# The classic text format: every Prometheus server reads it, and with names that are valid
# legacy names (all of ours) it is byte-identical to what generate_latest() writes.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# HTTP endpoint limits: Prometheus sends a ~200-byte request; anything much bigger is not a
# scraper. The deadline defeats slow-loris on the metrics port; the connection cap bounds memory.
MAX_HTTP_REQUEST_BYTES: Final = 8192
HTTP_READ_DEADLINE: Final = 5.0
MAX_HTTP_CONNECTIONS: Final = 32


def method_label(method: str) -> str:
    """The `method` label of a request: a registered method name, else "other"."""
    return _METHOD_LABEL.get(method, OTHER)


def status_class(action: Action) -> str:
    """`1xx`..`6xx` from the status the core put in `info.status`, else "other" (never read
    from the bytes: the shell makes no SIP decision)."""
    return _status_class(action.info.status)


def _status_class(status: int) -> str:
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


class Metrics:
    """Every sipguard series, in a registry of its own.

    `record_decision` is the hot path (one call per core action); the other methods are rare
    events. Series with small, known label sets are created up front so dashboards and alerts see
    zeros from the first scrape; `requests_total` (3 x 15 x 25 possible children) is created per
    label combination on first use and cached.
    """

    def __init__(self, *, version: str = __version__, trunks: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        transports = [t.value for t in Transport]
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

        self.build_info.labels(version).set(1)
        self._responses = {
            (d, c): self.responses.labels(d, c)
            for d in DIRECTIONS
            for c in (*STATUS_CLASSES, OTHER)
        }
        self._auth = {cause: self.auth.labels(result) for cause, result in _AUTH_RESULT.items()}
        self._acl_denied = {t: self.acl_denied.labels(t.value) for t in Transport}
        self._parse_errors = {t: self.parse_errors.labels(t.value) for t in Transport}
        self._connections = {name: self.connections.labels(name) for name in transports}
        self._reload_ok = self.config_reloads.labels("ok")
        self._reload_error = self.config_reloads.labels("error")
        self._plans: dict[DecisionKey, _Plan] = {}
        self._admitted: dict[str, Series] = {}
        self._log_suppressed: dict[str, Counter] = {}
        self._upstream_labels: set[str] = set()
        self._trunk_limited: dict[tuple[str, str], Series] = {}
        self._peer_unreachable: dict[str, Counter] = {}
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
        status_label = _status_class(status)
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

    def watch_trunk_calls(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Read `sipguard_trunk_calls_active` from `source` (trunk -> calls) at each scrape."""
        self.trunk_calls.source = source

    def _trunk_series(self, trunk: str) -> Series:
        series = self._admitted.get(trunk)
        if series is None:
            label = trunk if trunk and len(self._admitted) < MAX_TRUNK_SERIES else OTHER
            series = self._admitted.get(label)
            if series is None:
                series = self.admitted.labels(label)
            self._admitted[label] = series
        return series

    # -- rare events ------------------------------------------------------------------------

    def set_trunks(self, names: Iterable[str]) -> None:
        """Create the `admitted_total` series of the configured trunks (at start and reload).

        Series of trunks removed from the config stay until restart: a counter that vanishes
        and comes back would look like a reset to `rate()`."""
        for name in names:
            self._trunk_series(name)

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


# -- the HTTP endpoint ------------------------------------------------------------------------

_REASONS: Final[dict[int, str]] = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
}


def _http_response(status: int, body: bytes, content_type: str, head: bool = False) -> bytes:
    header = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return header if head else header + body


class Scrapable(Protocol):
    """What the endpoint serves: a `Metrics`, or the supervisor's aggregate of its workers."""

    def scrape(self) -> bytes: ...


def answer_http(metrics: Scrapable, request_line: bytes) -> bytes:
    """The whole HTTP response to one request line (the rest of the request is ignored)."""
    text = "text/plain; charset=utf-8"
    parts = request_line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _http_response(400, b"bad request\n", text)
    method, target, _ = parts
    if method not in (b"GET", b"HEAD"):
        return _http_response(405, b"method not allowed\n", text)
    head = method == b"HEAD"
    path = target.split(b"?", 1)[0]
    if path == b"/metrics":
        return _http_response(200, metrics.scrape(), CONTENT_TYPE, head)
    if path == b"/healthz":
        return _http_response(200, b"ok\n", text, head)
    return _http_response(404, b"not found\n", text, head)


async def _read_request_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request line, after reading (and discarding) the headers up to the blank line.

    The headers are read so that closing the socket does not reset the connection under unread
    bytes (which could make the client lose the response). None: too big or malformed."""
    request_line = await reader.readline()
    total = len(request_line)
    line = request_line
    while line not in (b"\r\n", b"\n", b""):
        line = await reader.readline()
        total += len(line)
        if total > MAX_HTTP_REQUEST_BYTES:
            return None
    return request_line if request_line.endswith(b"\n") else None


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """Listen on `host:port` and answer `GET /metrics`, `GET /healthz`; 404 for anything else.

    One request per connection (HTTP/1.1 with `Connection: close`): a scraper needs no more."""
    return await serve_http(_answer_with(metrics), host, port)


async def serve_http(respond: Responder, host: str, port: int) -> asyncio.Server:
    """The endpoint with another `respond` (request line -> whole response), e.g. the
    supervisor's, which reads its workers' series before it answers."""
    return await asyncio.start_server(
        _http_handler(respond), host, port, limit=MAX_HTTP_REQUEST_BYTES
    )


async def serve_metrics_unix(metrics: Metrics, path: str) -> asyncio.Server:
    """The same on a Unix socket: a worker's series, read by its supervisor (`workers: N`)."""
    return await asyncio.start_unix_server(
        _http_handler(_answer_with(metrics)), path, limit=MAX_HTTP_REQUEST_BYTES
    )


Responder = Callable[[bytes], Awaitable[bytes]]


def _answer_with(metrics: Metrics) -> Responder:
    async def respond(request_line: bytes) -> bytes:
        return answer_http(metrics, request_line)

    return respond


def _http_handler(
    respond: Responder,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        active += 1
        try:
            if active > MAX_HTTP_CONNECTIONS:
                return
            try:
                request_line = await asyncio.wait_for(
                    _read_request_head(reader), HTTP_READ_DEADLINE
                )
            except TimeoutError:
                writer.write(_http_response(408, b"timeout\n", "text/plain; charset=utf-8"))
            except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                # readline() raises ValueError when a line exceeds the StreamReader limit
                writer.write(_http_response(400, b"bad request\n", "text/plain; charset=utf-8"))
            else:
                if request_line is None:
                    writer.write(_http_response(400, b"bad request\n", "text/plain; charset=utf-8"))
                else:
                    writer.write(await respond(request_line))
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.drain(), HTTP_READ_DEADLINE)
        except (OSError, TimeoutError):
            pass  # the scraper went away: nothing to answer
        finally:
            active -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), HTTP_READ_DEADLINE)

    return handle
