"""The `upstream_health` section: OPTIONS probing of the upstreams and failover timing
(issue 14; the upstreams themselves, with priority and weight, are `network`'s).

Owns: the range of each key (names and defaults are `settings.UpstreamHealth`), the warning
when a probe may outlive its interval, and what no section means: no probing at all, so a
config written before pools existed sends nothing new to its upstream.

Never does: probe, time or choose anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from sipguard.config.reader import Reader
from sipguard.settings import NO_PROBING, UpstreamHealth

RFC_TIMER_C = 180.0  # RFC 3261 §16.6 step 11: Timer C is "greater than 3 minutes"


def read_upstream_health(
    r: Reader, value: object, done: Mapping[str, Any]
) -> UpstreamHealth | None:
    """`upstream_health`: OPTIONS probing and failover timing (issue 14). Without the section
    nothing is probed (as before pools existed); with it, every key has the documented
    default (`settings.UpstreamHealth`): probe_interval 5 s, so writing the section turns
    probing on."""
    names = tuple(f.name for f in dataclasses.fields(UpstreamHealth))
    if value is None:
        return NO_PROBING
    section = r.mapping(value, "upstream_health", names)
    if section is None:
        return None
    checks: dict[str, Callable[[object, str], Any]] = {
        "probe_interval": lambda v, k: r.number(v, k, 0.0, 3600.0),
        "probe_timeout": lambda v, k: r.number(v, k, 0.01, 60.0),
        "down_after": lambda v, k: r.integer(v, k, 1, 100),
        "up_after": lambda v, k: r.integer(v, k, 1, 100),
        "failover_timeout": lambda v, k: r.number(v, k, 0.01, 32.0),
        "timer_c": lambda v, k: r.number(v, k, 0.1, 3600.0),
    }
    values = {
        name: checks[name](section[name], f"upstream_health.{name}")
        for name in names
        if name in section
    }
    if any(v is None for v in values.values()):
        return None
    health = UpstreamHealth(**values)
    if 0 < health.probe_interval < health.probe_timeout:
        r.warn(
            "upstream_health.probe_timeout",
            f"{health.probe_timeout:g} s is longer than probe_interval "
            f"({health.probe_interval:g} s): the next probe waits for the one in flight",
        )
    if health.timer_c < RFC_TIMER_C:
        r.warn(
            "upstream_health.timer_c",
            f"{health.timer_c:g} s: RFC 3261 wants at least {RFC_TIMER_C:g} s (a call still "
            "ringing then is cancelled)",
        )
    return health
