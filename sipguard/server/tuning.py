"""What the settings mean to the running transports: the stream bounds, the sources that may use
the connections kept back from strangers, and how often the core ticks.

Owns: `stream_limits`, `reserved_sources`, `tick_interval` (with `TICK_INTERVAL` and
`MIN_TICK_INTERVAL`): pure functions of a `Settings`, read at start and again at each reload.

Never does: open a socket, touch the loop, decide anything about SIP.
"""

from __future__ import annotations

import contextlib

from sipguard.policy.whitelist import RuleSet, parse_rule
from sipguard.settings import Settings
from sipguard.transport.stream_limits import QUEUED_MESSAGES, ReservedSource, StreamLimits

TICK_INTERVAL = 1.0  # seconds between core.tick calls (bans, table expiry)...
MIN_TICK_INTERVAL = 0.05  # ...or less: the upstream pool's timers need a quarter of their period


def stream_limits(settings: Settings) -> StreamLimits:
    """The stream bounds from the config (`limits`, and `tls.handshake_timeout` when set)."""
    limits = settings.limits
    handshake = limits.tls_handshake_timeout
    if settings.tls is not None:
        handshake = min(handshake, settings.tls.handshake_timeout)
    return StreamLimits(
        read_deadline=limits.read_deadline,
        idle_timeout=limits.idle_timeout,
        handshake_timeout=handshake,
        max_connections=limits.max_connections,
        max_connections_per_source=limits.max_connections_per_source,
        max_write_buffer=QUEUED_MESSAGES * limits.max_message_bytes,
        max_pending_bytes=QUEUED_MESSAGES * limits.max_message_bytes,
    )


def tick_interval(settings: Settings) -> float:
    """Seconds between two core ticks: TICK_INTERVAL, or a quarter of the shortest pool timer
    (failover_timeout, and probe_timeout / probe_interval when probing), so that a failover or
    a probe timeout is acted on within a quarter of its period; never below MIN_TICK_INTERVAL."""
    health = settings.upstream_health
    periods = [TICK_INTERVAL * 4, health.failover_timeout]
    if health.probe_interval > 0:
        periods += [health.probe_interval, health.probe_timeout]
    return max(MIN_TICK_INTERVAL, min(periods) / 4)


def reserved_sources(settings: Settings) -> ReservedSource | None:
    """Which socket peers may use the stream connections kept back from strangers
    (SECURITY-CASES 9): an address that a trunk's whitelist names (an empty whitelist names
    nobody: it admits any address, and so reserves nothing) or an upstream's address. None
    when the config names no address. IPv4-mapped peers match IPv4 entries (policy.whitelist).
    The whitelist entries come parsed (`settings.Rule`); an upstream's host is an IP literal."""
    rules = [rule for trunk in settings.trunks for rule in trunk.whitelist]
    for upstream in settings.upstream:
        with contextlib.suppress(ValueError):  # an IP literal by Upstream's contract
            rules.append(parse_rule(upstream.host))
    if not rules:
        return None
    return RuleSet(rules).__contains__
