"""The observability sections: `metrics` (the Prometheus endpoint) and `log`.

Owns: the metrics listen address (`address:port`, an IP literal) and the log level and format.

Never does: open the endpoint or configure logging (`sipguard.observer` does, from these values).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sipguard.config.reader import Reader
from sipguard.settings import LOG_FORMATS, LOG_LEVELS, LogSettings, MetricsSettings

METRICS_KEYS = ("listen",)
LOG_KEYS = ("level", "format")
_HOSTPORT = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]:/]*)):(?P<port>[^:]*)\Z")


def read_metrics(r: Reader, value: object, done: Mapping[str, Any]) -> MetricsSettings | None:
    """`metrics`: optional; `listen: address:port` of `/metrics` and `/healthz`."""
    if value is None:
        return None
    section = r.mapping(value, "metrics", METRICS_KEYS)
    if section is None:
        return None
    if "listen" not in section:
        r.error("metrics.listen", "missing: give address:port, e.g. 127.0.0.1:9460")
        return None
    text = r.string(section["listen"], "metrics.listen")
    if text is None:
        return None
    match = _HOSTPORT.match(text)
    if match is None:
        r.error("metrics.listen", f"{text!r}: expected address:port, e.g. 127.0.0.1:9460")
        return None
    host = r.ip_literal(match["v6"], match["host"], "metrics.listen", text)
    port = r.port(match["port"], "metrics.listen", text)
    if host is None or port is None:
        return None
    return MetricsSettings(host, port)


def read_log(r: Reader, value: object, done: Mapping[str, Any]) -> LogSettings | None:
    """`log`: level and format, both with defaults."""
    section = r.mapping(value, "log", LOG_KEYS)
    if section is None:
        return None
    level = r.choice(section.get("level", "info"), "log.level", LOG_LEVELS)
    fmt = r.choice(section.get("format", "auto"), "log.format", LOG_FORMATS)
    if level is None or fmt is None:
        return None
    return LogSettings(level, fmt)
