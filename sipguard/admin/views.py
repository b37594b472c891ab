"""What the admin API reads and changes, and the JSON it answers with.

Owns: the `AdminBackend` protocol (what the daemon offers the API), the JSON shape of a ban, a
trunk, an upstream and the status, and the checks of what a client sends (an IP literal, a ban
duration).

Never does: HTTP (that is `sipguard.admin.api`), or put a secret in an answer: a credential is
its username and validity, never its password or HA1; the token is never echoed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from sipguard.policy.guard import BanRecord
from sipguard.policy.limits import TrunkUsage
from sipguard.proxy.upstream_report import Outcome, UpstreamStatus
from sipguard.settings import Settings, Trunk, TrunkLimits

# An operator ban longer than a year is a typo (or meant to be a firewall rule).
MAX_BAN_SECONDS = 365 * 86400.0

JSON = dict[str, Any]


class AdminBackend(Protocol):
    """The running daemon as the admin API sees it. Times are `time.time()` seconds."""

    @property
    def settings(self) -> Settings: ...

    def bans(self) -> list[BanRecord]: ...

    def ban(self, address: str, duration: float | None) -> BanRecord | None: ...

    def unban(self, address: str) -> bool: ...

    def trunk_usage(self, name: str) -> TrunkUsage | None: ...

    def upstreams(self) -> list[JSON]: ...

    async def reload(self) -> list[str]: ...

    def status(self) -> JSON: ...

    def note(self, level: str, event: str, **fields: Any) -> None: ...


class AdminService(Protocol):
    """What the HTTP side serves, as JSON: one daemon's (`daemon.LocalService` over an
    `AdminBackend`) or a host's of `workers: N` (`host.HostService`, every worker's merged).

    `ban` answers the ban's view or None (nothing banned: exempt, or bans off); `unban` whether
    a ban was lifted; `reload` the problems (empty: applied)."""

    @property
    def settings(self) -> Settings: ...

    async def bans(self) -> list[JSON]: ...

    async def ban(self, address: str, duration: float | None) -> JSON | None: ...

    async def unban(self, address: str) -> bool: ...

    async def trunks(self) -> list[JSON]: ...

    async def upstreams(self) -> list[JSON]: ...

    async def reload(self) -> list[str]: ...

    async def status(self) -> JSON: ...

    def note(self, level: str, event: str, **fields: Any) -> None: ...


class ServiceError(Exception):
    """The service cannot answer as asked (e.g. a worker of the host did not answer): the HTTP
    status and a message without secrets; `extra` goes into the JSON error as is."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class RequestError(ValueError):
    """What the client sent cannot be used; the message says why (no secret in it)."""


def timestamp(seconds: float) -> str:
    """RFC 3339 UTC, whole seconds: `2026-12-02T06:30:00Z`."""
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def parse_address(text: object) -> str:
    """An IP literal as the core keys sources: IPv4-mapped IPv6 as IPv4, IPv6 compressed."""
    if not isinstance(text, str) or not text or len(text) > 64:
        raise RequestError("address: give an IPv4 or IPv6 address, e.g. 203.0.113.7")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise RequestError(f"address: {text!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            raise RequestError("address: no zone id (%...) in an address")
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
    return str(ip)


def parse_ban(body: object) -> tuple[str, float | None]:
    """`{"address": "203.0.113.7", "duration": 600}` (duration optional: the configured one)."""
    if not isinstance(body, dict):
        raise RequestError('body: expected a JSON object {"address": ..., "duration": ...}')
    unknown = sorted(set(body) - {"address", "duration"})
    if unknown:
        raise RequestError(f"body: unknown key {unknown[0]!r} (known: address, duration)")
    address = parse_address(body.get("address"))
    duration = body.get("duration")
    if duration is None:
        return address, None
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise RequestError("duration: give seconds as a number, e.g. 600")
    if not 0 < duration <= MAX_BAN_SECONDS:
        raise RequestError(f"duration: must be > 0 and at most {MAX_BAN_SECONDS:.0f} seconds")
    return address, float(duration)


def ban_view(record: BanRecord) -> JSON:
    return {
        "address": record.ip,
        "since": timestamp(record.since),
        "until": timestamp(record.until),
        "failures": record.failures,
    }


def limits_view(limits: TrunkLimits) -> JSON:
    return {
        "calls_per_second": limits.calls_per_second,
        "concurrent_calls": limits.concurrent_calls,
        "registrations_per_second": limits.registrations_per_second,
        "max_call_duration": limits.max_call_duration,
    }


def trunk_view(trunk: Trunk, usage: TrunkUsage | None, now: datetime) -> JSON:
    """One trunk: its rules, its credentials' validity, its limits and counters."""
    credentials = [
        {
            "username": c.username,
            "valid_until": None if c.valid_until is None else c.valid_until.isoformat(),
            "not_before": None if c.not_before is None else c.not_before.isoformat(),
            "valid": c.is_valid_at(now),
        }
        for c in trunk.credentials
    ]
    refused: Mapping[str, int] = {}
    if usage is not None:
        refused = {verdict.value: count for verdict, count in usage.refused.items()}
    return {
        "name": trunk.name,
        "whitelist": [rule.text for rule in trunk.whitelist],
        "algorithms": None if trunk.algorithms is None else list(trunk.algorithms),
        "credentials": credentials,
        "limits": limits_view(trunk.limits),
        "active_calls": 0 if usage is None else usage.active,
        "active_calls_elsewhere": 0 if usage is None else usage.remote,
        "admitted": {
            "calls": 0 if usage is None else usage.calls_admitted,
            "registrations": 0 if usage is None else usage.registrations_admitted,
        },
        "refused": dict(refused),
    }


def _maybe_time(seconds: float | None) -> str | None:
    return None if seconds is None else timestamp(seconds)


def upstream_view(status: UpstreamStatus) -> JSON:
    """One upstream of the pool: its configured URI and place, its health since when, its last
    probe and consecutive results, and its attempts since start (issue 14's counts)."""
    health, member = status.health, status.health.member
    address = member.address
    last_probe = None
    if health.last_probe is not None:
        last_probe = {"at": timestamp(health.last_probe), "outcome": health.last_outcome}
    return {
        "uri": member.uri,
        "transport": address.transport.value,
        "host": address.host,
        "port": address.port,
        "priority": member.priority,
        "weight": member.weight,
        "state": health.health.value,
        "since": _maybe_time(health.since),
        "last_probe": last_probe,
        "consecutive_failures": health.failures,
        "consecutive_successes": health.successes,
        "forwarded": status.counts.get(Outcome.FORWARDED, 0),
        "failed_over": status.counts.get(Outcome.FAILED_OVER, 0),
        "timeouts": status.counts.get(Outcome.TIMEOUT, 0),
    }
