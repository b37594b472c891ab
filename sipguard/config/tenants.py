"""A trunk's `limits` (issue 17): what one tenant may use of the platform.

Owns: `read_trunk_limits`, the reader of `trunks[].limits` (registered in `auth.TRUNK_KEYS`):
`calls_per_second`, `registrations_per_second` (requests per second, a token bucket with two
seconds of burst), `concurrent_calls` (calls being set up or answered) and `max_call_duration`
(seconds after which a call whose BYE never came stops counting). Every key is optional; an
absent one does not limit.

Never does: apply a limit (`sipguard.policy.limits` does).
"""

from __future__ import annotations

import dataclasses

from sipguard.config.reader import Reader, describe
from sipguard.settings import TrunkLimits

LIMIT_KEYS = tuple(f.name for f in dataclasses.fields(TrunkLimits))
MAX_RATE = 100_000.0  # per second: far above what one host forwards
MAX_CONCURRENT_CALLS = 10_000_000
MAX_CALL_DURATION = 30 * 86400.0  # a month: longer is a typo, and the count would never free


def _rate(r: Reader, value: object, key: str) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        r.error(key, f"expected a number per second, got {describe(value)}")
        return None
    if not 0 < value <= MAX_RATE:
        r.error(key, f"{value} is out of range: more than 0, at most {MAX_RATE:g}")
        return None
    return float(value)


def read_trunk_limits(r: Reader, value: object, key: str) -> TrunkLimits | None:
    """`trunks[i].limits`: each key optional; None (a problem reported) when one is wrong."""
    section = r.mapping(value, key, LIMIT_KEYS)
    if section is None:
        return None
    before = len(r.problems)
    values: dict[str, float | int | None] = {}
    for name in ("calls_per_second", "registrations_per_second"):
        if name in section:
            values[name] = _rate(r, section[name], f"{key}.{name}")
    if "concurrent_calls" in section:
        values["concurrent_calls"] = r.integer(
            section["concurrent_calls"], f"{key}.concurrent_calls", 0, MAX_CONCURRENT_CALLS
        )
    if "max_call_duration" in section:
        values["max_call_duration"] = r.number(
            section["max_call_duration"], f"{key}.max_call_duration", 1.0, MAX_CALL_DURATION
        )
    if len(r.problems) != before:
        return None
    return TrunkLimits(**values)  # type: ignore[arg-type]
