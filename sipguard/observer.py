"""What the daemon reports: each core decision and lifecycle event, to metrics, logs and systemd.

Owns: the `Observer` the shell (`sipguard.server`) calls, and its rooms: here the decisions
(`decision`, the hot path: the series through `Metrics.record_decision`, the line of the
decision's event), the lifecycle (when systemd hears READY/RELOADING/STOPPING, what a reload
changed: `reload_fields`), the /metrics endpoint it serves, and `build_observer`; the other
reports of the shell (connections, errors, the upstream pool, the shared state, bans) in
`sipguard.reports`; the event vocabulary and the budget of lines in `sipguard.events`.

Never does: a SIP decision, or log a header value as the source: `src_ip`/`src_port` are always
the socket peer handed in by the shell (fail2ban-style tools ban on them; a Via or Contact can say
anything). Never logs per packet at info: relayed responses, in-dialog requests, keep-alives and
answered OPTIONS are debug; admissions, challenges, failures and denials are info or warning.
Each decision event is bounded to `log_rate` lines per second (burst `log_burst`, see
`sipguard.events`). Metrics count every decision regardless.

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
from sipguard.events import (
    DEFAULT_LOG_BURST,
    DEFAULT_LOG_RATE,
    DROPPED_RESPONSE_EVENT,
    ERROR,
    EVENTS,
    INFO,
    Pacing,
)
from sipguard.labels import is_dropped_response
from sipguard.logs import configure_logging
from sipguard.metrics import Metrics, serve_metrics
from sipguard.notify import STOP_MARGIN, Notifier
from sipguard.policy.sources import normalise_source_text
from sipguard.proxy.actions import Action, Address, Drop, Forward, Reply
from sipguard.reports import Reports
from sipguard.settings import LogSettings, MetricsSettings, Settings
from sipguard.settings.diff import diff_settings
from sipguard.worker import WORKER_ENV

_ACTION_KIND: Final[dict[type, str]] = {Reply: "reply", Forward: "forward", Drop: "drop"}


def reply_status(action: Action) -> int:
    """The status of a reply or relayed response, as the core set it (0: not a response)."""
    return action.info.status


class Observer(Reports):
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
        super().__init__(clock, notifier, metrics, logger, Pacing(log_rate, log_burst, monotonic))
        self._log_settings = log_settings
        self._log_stream = log_stream
        self._serve = serve_endpoint
        self._endpoint_settings = endpoint
        self._endpoint: asyncio.Server | None = None
        self._endpoint_tasks: set[asyncio.Task[None]] = set()
        self._settings = settings
        if metrics is not None:
            metrics.bans_active.set_function(self.active_bans)

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
    socket, see `server.run._serve`), never opens `metrics.listen`, and its log lines carry
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
