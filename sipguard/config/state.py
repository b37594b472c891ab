"""The `state` section: where state shared by workers and hosts lives (issue 15).

Owns: the checks of `state.backend`, `state.redis_url` (scheme redis, rediss or unix; the URL
may hold a password, so it is never quoted in a message), `state.key_prefix` and
`state.on_error`. Names and defaults are `settings.StateSettings`.

Never does: connect to Redis (a server down at start is an outage like any other, handled by
`sipguard.state` with `on_error`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sipguard.config.reader import Reader
from sipguard.settings import StateSettings

BACKENDS: Final = ("memory", "redis")
ON_ERROR: Final = ("local", "refuse")
URL_SCHEMES: Final = ("redis://", "rediss://", "unix://")
KEYS: Final = ("backend", "redis_url", "key_prefix", "on_error")


def read_state(r: Reader, value: object, done: Mapping[str, Any]) -> StateSettings | None:
    """`state`: backend, redis_url, key_prefix, on_error (every key optional)."""
    section = r.mapping(value, "state", KEYS)
    if section is None:
        return None
    before = len(r.problems)
    values: dict[str, Any] = {}
    if "backend" in section:
        values["backend"] = r.choice(section["backend"], "state.backend", BACKENDS)
    if "on_error" in section:
        values["on_error"] = r.choice(section["on_error"], "state.on_error", ON_ERROR)
    if "key_prefix" in section:
        values["key_prefix"] = r.string(section["key_prefix"], "state.key_prefix")
    if "redis_url" in section:
        url = r.string(section["redis_url"], "state.redis_url", secret=True)
        if url is not None and not url.startswith(URL_SCHEMES):
            r.error("state.redis_url", "use redis://HOST:PORT/DB, rediss:// (TLS) or unix:///PATH")
        values["redis_url"] = url
    if len(r.problems) != before:
        return None
    return StateSettings(**values)
