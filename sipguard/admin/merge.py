"""The host's answer from its workers' answers (`workers: N`): one JSON in the same shape as a
lone daemon's, made from each worker's JSON by the rules below.

Owns the rules:
- bans: the union by address; a source banned on several workers (each guard counts its own
  failures; with Redis every worker holds the shared ban) shows once, with the earliest
  `since`, the latest `until` and the highest `failures`;
- trunks: one entry per trunk (rules and limits are the same file's), with `active_calls`,
  `admitted` and `refused` added up over the workers. `active_calls_elsewhere`: calls on other
  hosts. A worker's own "elsewhere" (shared state) counts its sibling workers too, so the host's
  is the largest total any worker sees (its own plus elsewhere) less the host's own sum;
- upstreams: one entry per configured upstream; `forwarded`, `failed_over` and `timeouts` added
  up; every other field as the workers agree on it. Each worker probes on its own, so they can
  disagree for a while: then `state` is "mixed", the other fields are the first worker's, and
  `workers` lists each worker's own view (`worker`, `state`, `since`, `last_probe`,
  `consecutive_failures`, `consecutive_successes`).

Never does: I/O (`sipguard.admin.host` asks the workers), or read a secret (the workers' JSON
has none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sipguard.admin.views import JSON

# Fields of an upstream that each worker has its own of (its probes and its pool's view).
UPSTREAM_OWN: Final = (
    "state",
    "since",
    "last_probe",
    "consecutive_failures",
    "consecutive_successes",
)
UPSTREAM_COUNTS: Final = ("forwarded", "failed_over", "timeouts")
MIXED: Final = "mixed"  # `state` of an upstream the workers disagree about


def merge_ban(views: Sequence[JSON]) -> JSON:
    """One address's bans on several workers as one (RFC 3339 UTC strings compare in order)."""
    first = views[0]
    return {
        "address": first["address"],
        "since": min(view["since"] for view in views),
        "until": max(view["until"] for view in views),
        "failures": max(view["failures"] for view in views),
    }


def merge_bans(answers: Sequence[Sequence[JSON]]) -> list[JSON]:
    """Every worker's bans as the host's: the union, in the order first seen."""
    by_address: dict[str, list[JSON]] = {}
    for bans in answers:
        for view in bans:
            by_address.setdefault(view["address"], []).append(view)
    return [merge_ban(views) for views in by_address.values()]


def _add(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total


def merge_trunk(views: Sequence[JSON]) -> JSON:
    """One trunk as every worker sees it, as the host's."""
    own = sum(view["active_calls"] for view in views)
    seen = max(view["active_calls"] + view["active_calls_elsewhere"] for view in views)
    return {
        **views[0],
        "active_calls": own,
        "active_calls_elsewhere": max(0, seen - own),
        "admitted": _add([view["admitted"] for view in views]),
        "refused": _add([view["refused"] for view in views]),
    }


def merge_trunks(answers: Sequence[Sequence[JSON]]) -> list[JSON]:
    """Every worker's trunks as the host's, in the first worker's (the file's) order."""
    by_name: dict[str, list[JSON]] = {}
    for trunks in answers:
        for view in trunks:
            by_name.setdefault(view["name"], []).append(view)
    return [merge_trunk(views) for views in by_name.values()]


def merge_upstream(views: Sequence[tuple[int, JSON]]) -> JSON:
    """One upstream as workers (index, view) see it, as the host's."""
    first = views[0][1]
    merged: JSON = {**first}
    for key in UPSTREAM_COUNTS:
        merged[key] = sum(view[key] for _, view in views)
    agree = all(view[key] == first[key] for _, view in views for key in UPSTREAM_OWN)
    if not agree:
        if any(view["state"] != first["state"] for _, view in views):
            merged["state"] = MIXED
        merged["workers"] = [
            {"worker": index, **{key: view[key] for key in UPSTREAM_OWN}} for index, view in views
        ]
    return merged


def merge_upstreams(answers: Sequence[tuple[int, Sequence[JSON]]]) -> list[JSON]:
    """Every worker's upstreams (index, list) as the host's, in the configured order."""
    by_place: dict[tuple[Any, ...], list[tuple[int, JSON]]] = {}
    for index, upstreams in answers:
        for place, view in enumerate(upstreams):
            by_place.setdefault((place, view["uri"]), []).append((index, view))
    return [merge_upstream(views) for views in by_place.values()]
