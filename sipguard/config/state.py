"""The `state` section: where state shared by workers and hosts lives (issue 15).

Owns: the checks of `state.backend`, `state.redis_url` (one server, a Sentinel service or a
Cluster: the forms are `sipguard.redis_target`'s; the URL may hold a password, so it is never
quoted in a message), `state.key_prefix` and `state.on_error`. Names and defaults are
`settings.StateSettings`.

Never does: connect to Redis (a server down at start is an outage like any other, handled by
`sipguard.state` with `on_error`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sipguard.config.reader import Reader
from sipguard.redis_target import check as check_redis_url
from sipguard.settings import StateSettings

BACKENDS: Final = ("memory", "redis")
ON_ERROR: Final = ("local", "refuse")
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
        problem = None if url is None else check_redis_url(url)
        if problem is not None:  # never quotes the URL: it may hold a password
            r.error("state.redis_url", problem)
        values["redis_url"] = url
    if len(r.problems) != before:
        return None
    return StateSettings(**values)
