"""What the daemon reports: each core decision and lifecycle event, to metrics, logs and systemd.

Owns: the `Observer` the shell (`sipguard.server`) calls, and the event vocabulary: which
`Cause` is which log event at which level (`EVENTS`), which series it moves (through
`Metrics.record_decision`), when systemd hears READY/RELOADING/STOPPING.

Never does: a SIP decision, or log a header value as the source: `src_ip`/`src_port` are always
the socket peer handed in by the shell (fail2ban-style tools ban on them; a Via or Contact can say
anything). Never logs per packet at info: relayed responses, in-dialog requests, keep-alives and
answered OPTIONS are debug; admissions, challenges, failures and denials are info or warning.
Each decision event is bounded to `log_rate` lines per second (burst `log_burst`) so a flood
cannot fill the disk; the next line written carries `suppressed=N` and the metric
`sipguard_log_suppressed_total{event}` counts the rest. Metrics count every decision regardless.

RFC 3261 §16.10 (the 200 to a CANCEL accompanies its forwarding: `Reply.accompanies`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Final

from structlog.typing import FilteringBoundLogger

from sipguard import __version__
from sipguard.labels import DROPPED_RESPONSE_CAUSES, is_dropped_response
from sipguard.logs import configure_logging
from sipguard.metrics import Metrics, serve_metrics
from sipguard.notify import Notifier
from sipguard.policy.sources import normalise_source_text
from sipguard.proxy.actions import Action, Address, BanEvent, Cause, Drop, Forward, Reply
from sipguard.proxy.failover import FailoverEvent, UpstreamReport
from sipguard.proxy.pool import Health
from sipguard.settings import LogSettings, MetricsSettings, Settings
from sipguard.settings.diff import diff_settings
from sipguard.worker import WORKER_ENV

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
# Seconds a stop may take beyond `limits.shutdown_grace`: the server's flush of open connections
# (`server.CLOSE_WAIT`, 1 s) and the exit itself, with room for a loaded machine.
STOP_MARGIN: Final = 5.0
# Bans remembered for the `sipguard_bans_active` gauge; expired ones are pruned beyond this.
MAX_TRACKED_BANS: Final = 100_000

_ACTION_KIND: Final[dict[type, str]] = {Reply: "reply", Forward: "forward", Drop: "drop"}


def reply_status(action: Action) -> int:
    """The status of a reply or relayed response, as the core set it (0: not a response)."""
    return action.info.status


class _Budget:
    """Token bucket for the lines of one event name."""

    __slots__ = ("stamp", "suppressed", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.suppressed = 0


class Observer:
    """Turns what the shell reports into metrics, log lines and systemd notifications.

    Any of `metrics`, `logger`, `notifier` may be None (not configured / not under systemd).
    `clock` must be the clock whose `now` the server passes to the core, since ban expiry times
    (`BanEvent.until`) are on it; `monotonic` paces the log rate limit."""

    def __init__(
        self,
        metrics: Metrics | None,
        logger: FilteringBoundLogger | None,
        notifier: Notifier | None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        log_rate: float | None = DEFAULT_LOG_RATE,
        log_burst: float = DEFAULT_LOG_BURST,
        log_settings: LogSettings | None = None,
        log_stream: IO[Any] | None = None,
        endpoint: MetricsSettings | None = None,
        serve_endpoint: bool = False,
        settings: Settings | None = None,
    ) -> None:
        """`log_settings`: the logging this observer configured (see `build_observer`); when
        given, a reload whose `log:` section differs reconfigures logging to `log_stream`.
        `settings`: the configuration running now; `config_reloaded` then says what changed.
        `serve_endpoint`: serve /metrics and /healthz on `endpoint` once `started()` runs in the
        loop, and follow `metrics.listen` on reloads; False leaves the endpoint to the caller."""
        self.metrics = metrics
        self.notifier = notifier
        self._clock = clock
        self._monotonic = monotonic
        self._log_rate = log_rate
        self._log_burst = log_burst
        self._budgets: dict[str, _Budget] = {}
        self._bans: dict[str, float] = {}
        self._emit: dict[int, Callable[..., Any]] = {}
        # The causes whose decisions may write a line at the level set: the others are only
        # counted, at the price of one set lookup (see `decision`).
        self._logged: frozenset[Cause] = frozenset()
        self._log_settings = log_settings
        self._log_stream = log_stream
        self._serve = serve_endpoint
        self._endpoint_settings = endpoint
        self._endpoint: asyncio.Server | None = None
        self._endpoint_tasks: set[asyncio.Task[None]] = set()
        self._settings = settings
        self.set_logger(logger)
        if metrics is not None:
            metrics.bans_active.set_function(self.active_bans)

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

    # -- the hot path -----------------------------------------------------------------------

    def decision(self, action: Action, source: Address, elapsed: float) -> None:
        """One action the core returned for a message from `source` (the socket peer), after
        `elapsed` seconds of processing. Decisions whose event the log level drops cost one set
        lookup here: no event name, no budget, no fields."""
        if self.metrics is not None:
            self.metrics.record_decision(action, source, elapsed)
        cause = action.cause
        if cause not in self._logged:
            return
        if type(action) is Reply and action.accompanies:
            return  # the reply that accompanies a Forward (200 to CANCEL): the Forward is logged
        if is_dropped_response(action):
            event, level = DROPPED_RESPONSE_EVENT
        else:
            event, level = EVENTS[cause]
        emit = self._emit.get(level)
        if emit is None:
            return
        suppressed = self._allow(event)
        if suppressed is None:
            return
        info = action.info
        fields: dict[str, Any] = {
            "src_ip": normalise_source_text(source.host),
            "src_port": source.port,
            "transport": source.transport.value,
            "cause": cause.value,
            "action": _ACTION_KIND[type(action)],
        }
        if info.method:
            fields["method"] = info.method
        if info.call_id:
            fields["call_id"] = info.call_id
        if info.trunk:
            fields["trunk"] = info.trunk
        if info.user:
            fields["user"] = info.user
        status = reply_status(action)
        if status:
            fields["status"] = status
        if info.detail:
            fields["detail"] = info.detail
        if isinstance(action, Forward):
            fields["dst_ip"] = action.to.host
            fields["dst_port"] = action.to.port
        elif isinstance(action, Drop) and action.close:
            fields["closed"] = True
        if suppressed:
            fields["suppressed"] = suppressed
        emit(event, **fields)

    def _allow(self, event: str) -> int | None:
        """None: drop this line; else the number of lines of `event` dropped since the last."""
        if self._log_rate is None:
            return 0
        now = self._monotonic()
        budget = self._budgets.get(event)
        if budget is None:
            budget = self._budgets[event] = _Budget(self._log_burst, now)
        else:
            budget.tokens = min(
                self._log_burst, budget.tokens + (now - budget.stamp) * self._log_rate
            )
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

    # -- lifecycle --------------------------------------------------------------------------

    def started(self, listeners: Sequence[str]) -> None:
        """Every listener is bound: tell systemd the service is up."""
        self._log(INFO, "started", listeners=list(listeners), version=__version__, pid=os.getpid())
        self._open_endpoint()
        if self.notifier is not None:
            self.notifier.ready(f"serving on {', '.join(listeners)}")

    def reloading(self) -> None:
        """A reload begins (SIGHUP); `config_reloaded` or `config_reload_failed` follows."""
        self._log(INFO, "config_reloading")
        if self.notifier is not None:
            self.notifier.reloading("reloading the configuration")

    def config_reloaded(self, settings: Settings) -> None:
        if self._log_settings is not None and settings.log != self._log_settings:
            self._log_settings = settings.log
            self.set_logger(
                configure_logging(settings.log.level, settings.log.format, self._log_stream)
            )
        if self._serve and self._endpoint_settings != settings.metrics:
            self._close_endpoint()
            self._endpoint_settings = settings.metrics
            if settings.metrics is not None and self.metrics is None:
                self.metrics = Metrics(trunks=[trunk.name for trunk in settings.trunks])
                self.metrics.bans_active.set_function(self.active_bans)
            self._open_endpoint()
        if self.metrics is not None:
            self.metrics.config_reloaded(ok=True)
            self.metrics.set_trunks(trunk.name for trunk in settings.trunks)
            self.metrics.set_upstreams(upstream.uri for upstream in settings.upstream)
        previous, self._settings = self._settings, settings
        fields = reload_fields(previous, settings)
        self._log(INFO, "config_reloaded", file=settings.source, **fields)
        if self.notifier is not None:
            self.notifier.ready("serving; configuration reloaded")

    def config_reload_failed(self, problems: list[str]) -> None:
        """The new file was refused; the old configuration keeps running."""
        if self.metrics is not None:
            self.metrics.config_reloaded(ok=False)
        self._log(ERROR, "config_reload_failed", problems=problems[:20], count=len(problems))
        # systemd waits for READY=1 after RELOADING=1, whatever the outcome (sd_notify(3))
        if self.notifier is not None:
            self.notifier.ready("serving; configuration reload FAILED, previous one kept")

    def stopping(self) -> None:
        """SIGTERM/SIGINT: the drain begins. systemd hears how long it may take (the running
        `limits.shutdown_grace` plus `STOP_MARGIN`), so TimeoutStopSec= cannot cut it short."""
        self._close_endpoint()
        grace = None if self._settings is None else self._settings.limits.shutdown_grace
        self._log(INFO, "stopping", **({} if grace is None else {"grace": grace}))
        if self.notifier is not None:
            needs = None if grace is None else grace + STOP_MARGIN
            self.notifier.stopping("stopping", needs=needs)

    # -- the /metrics endpoint ---------------------------------------------------------------

    def _open_endpoint(self) -> None:
        where = self._endpoint_settings
        if not self._serve or where is None or self.metrics is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not in the event loop (a test, a tool): nothing to serve from
        task = loop.create_task(self._serve_endpoint(self.metrics, where))
        self._endpoint_tasks.add(task)
        task.add_done_callback(self._endpoint_tasks.discard)

    async def _serve_endpoint(self, metrics: Metrics, where: MetricsSettings) -> None:
        url = f"http://{'[' + where.host + ']' if ':' in where.host else where.host}:{where.port}"
        try:
            server = await serve_metrics(metrics, where.host, where.port)
        except OSError as exc:
            # metrics are not worth refusing SIP service for: say so loudly and keep serving
            self.listener_error(f"{url}/metrics", exc.strerror or str(exc))
            return
        if self._endpoint_settings != where:  # a reload moved it while we were binding
            server.close()
            return
        self._endpoint = server
        self._log(INFO, "metrics_listening", url=f"{url}/metrics")

    def _close_endpoint(self) -> None:
        for task in list(self._endpoint_tasks):
            task.cancel()
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    @property
    def endpoint(self) -> asyncio.Server | None:
        """The running /metrics server, if this observer started one."""
        return self._endpoint


def reload_fields(previous: Settings | None, settings: Settings) -> dict[str, Any]:
    """The `config_reloaded` fields: what the new configuration holds (trunks, whitelist rules,
    users, listeners) and, against `previous`, what changed: trunks and listeners by name, other
    sections by name, the counts before when they differ, or `unchanged=true` (the file was
    saved, but nothing in it differs: maybe not the file that was edited)."""
    diff = diff_settings(settings if previous is None else previous, settings)
    fields: dict[str, Any] = {
        "trunks": len(settings.trunks),
        "rules": diff.rules[1],
        "users": diff.credentials[1],  # not "credentials": a key named so is redacted (logs)
        "listeners": [listener.url for listener in settings.listen],
    }
    if previous is None:
        return fields
    named = {
        "trunks_added": diff.trunks_added,
        "trunks_removed": diff.trunks_removed,
        "trunks_changed": diff.trunks_changed,
        "listeners_added": diff.listeners_added,
        "listeners_removed": diff.listeners_removed,
        "sections_changed": diff.sections_changed,
    }
    fields.update((key, list(names)) for key, names in named.items() if names)
    for key, (before, after) in (
        ("rules", diff.rules),
        ("users", diff.credentials),
    ):
        if before != after:
            fields[f"{key}_before"] = before
    if not diff.changed:
        fields["unchanged"] = True
    return fields


def build_observer(settings: Settings, *, stream: IO[Any] | None = None) -> Observer:
    """The daemon's observer: logging configured from `settings.log` (on `stream`, default
    stdout), a `Metrics` with the configured trunks when `settings.metrics` is set, and a
    notifier when run by systemd. Usable as `server.run_from_file(observer_factory=...)`.

    The observer serves /metrics and /healthz on `settings.metrics` once `started()` is called
    from the event loop (a port in use there is logged as `listener_error`, not fatal).

    In a worker of `workers: N` (`sipguard.worker.WORKER_ENV` set) the supervisor serves the
    host's /metrics: the worker always keeps its `Metrics` (served to the supervisor on a Unix
    socket, see `server._serve`), never opens `metrics.listen`, and its log lines carry
    `worker=INDEX`."""
    worker = os.environ.get(WORKER_ENV)
    logger = configure_logging(settings.log.level, settings.log.format, stream)
    if worker is not None and logger is not None:
        logger = logger.bind(worker=int(worker) if worker.isdigit() else worker)
    metrics = None
    if settings.metrics is not None or worker is not None:
        metrics = Metrics(trunks=[trunk.name for trunk in settings.trunks])
        metrics.set_upstreams(upstream.uri for upstream in settings.upstream)
    return Observer(
        metrics,
        logger,
        Notifier.from_environ(),
        log_settings=settings.log,
        log_stream=stream,
        endpoint=settings.metrics,
        serve_endpoint=worker is None,
        settings=settings,
    )
