"""The protective sections: `limits` (sizes, counts, timeouts) and `protection` (bans, rates,
scanner User-Agents, sources never banned).

Owns: range checks of every limit (the names and defaults are `settings.Limits` and
`settings.Protection`: a new field there is a new key here, with no edit), the never-ban rules
(parsed once with `policy.whitelist.parse_rule`) and the User-Agent patterns (printable ASCII).

Never does: apply a limit or a ban.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from sipguard.config.reader import Reader
from sipguard.policy.whitelist import parse_rule
from sipguard.settings import RATE_ACTIONS, Limits, Protection, Rule


def read_limits(r: Reader, value: object, done: Mapping[str, Any]) -> Limits | None:
    """`limits`: each field of `Limits`, an integer or (where the default is) seconds."""
    names = tuple(f.name for f in dataclasses.fields(Limits))
    section = r.mapping(value, "limits", names)
    if section is None:
        return None
    values: dict[str, Any] = {}
    defaults = Limits()
    for name in names:
        if name not in section:
            continue
        if isinstance(getattr(defaults, name), float):
            values[name] = r.number(section[name], f"limits.{name}", 0.001, 86400.0)
        else:
            values[name] = r.integer(section[name], f"limits.{name}", 1, 2**31 - 1)
    if any(v is None for v in values.values()):
        return None
    return Limits(**values)


def _checks(r: Reader) -> dict[str, Callable[[object, str], Any]]:
    """The reader of each `Protection` field."""
    return {
        "ban_failures": lambda v, k: r.integer(v, k, 1, 1_000_000),
        "ban_window": lambda v, k: r.number(v, k, 0.001, 86400.0 * 30),
        "ban_duration": lambda v, k: r.number(v, k, 0.0, 86400.0 * 365),
        "rate": lambda v, k: r.number(v, k, 0.001, 1e9),
        "burst": lambda v, k: r.integer(v, k, 1, 2**31 - 1),
        "rate_action": lambda v, k: r.choice(v, k, RATE_ACTIONS),
        "never_ban": lambda v, k: rules(r, v, k),
        "scanner_user_agents": lambda v, k: user_agents(r, v, k),
    }


def read_protection(r: Reader, value: object, done: Mapping[str, Any]) -> Protection | None:
    """`protection`: bans after failures, the per-source rate, scanners, never-ban sources."""
    names = tuple(f.name for f in dataclasses.fields(Protection))
    section = r.mapping(value, "protection", names)
    if section is None:
        return None
    checks = _checks(r)
    values = {
        name: checks[name](section[name], f"protection.{name}") for name in names if name in section
    }
    if any(v is None for v in values.values()):
        return None
    return Protection(**values)


def rules(r: Reader, value: object, key: str) -> tuple[Rule, ...] | None:
    before = len(r.problems)
    items = r.parsed_list(value, key, parse_rule)
    if items is None:
        return None
    return tuple(rule for _, rule in items) if len(r.problems) == before else None


def user_agents(r: Reader, value: object, key: str) -> tuple[str, ...] | None:
    before = len(r.problems)
    items = r.string_list(value, key)
    if items is None:
        return None
    for where, text in items:
        if not text.isascii() or not text.isprintable():
            r.error(where, "use printable ASCII (User-Agent values are matched as bytes)")
    return tuple(text for _, text in items) if len(r.problems) == before else None
