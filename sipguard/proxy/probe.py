"""Health probes toward the upstreams: their branch, their outcome, and what is in flight.

Owns: the probe branch (it marks an OPTIONS as ours, see below), `classify` (a probe's answer:
any final response other than 408 or 503 means the upstream is up, RFC 3261 §21.4.9, §21.5.4;
a provisional one decides nothing), and `Prober`, which knows the probe in flight for each
upstream (at most one), when the next one is due, and turns answers, timeouts and transport
failures into results for the pool (`Pool.record`). The request itself is `originate`'s.

Never does: I/O or clocks: the shell asks `due(now)` on its own schedule, sends what it gets,
and reports answers (through the core, which recognises a probe branch), failures and the time.
Probes are not admitted traffic: their answers are consumed here, never relayed.

The branch is `z9hG4bKsgp` + 20 hex digits of an HMAC of a counter: unguessable, so an
attacker cannot answer a probe it did not see, and distinct from the stateless branches of
relayed requests (`z9hG4bKsg` + hex digits: `p` is not a hex digit).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import Enum

from sipguard.proxy.actions import Address
from sipguard.proxy.originate import build_probe
from sipguard.proxy.pool import MAX_LAG_PERIODS, HealthChange, Member, Pool
from sipguard.proxy.via import BRANCH_PREFIX

PROBE_BRANCH_PREFIX = BRANCH_PREFIX + b"p"


class ProbeOutcome(Enum):
    """How one probe ended. The value is the `reason` of a health change."""

    ANSWERED = "answered"  # a final response other than 408/503: up
    REFUSED = "unavailable"  # 408 or 503: the upstream says it cannot take calls
    TIMEOUT = "timeout"  # no final response within probe_timeout
    TRANSPORT = "transport_error"  # could not be sent (ICMP unreachable, connection refused)

    @property
    def ok(self) -> bool:
        return self is ProbeOutcome.ANSWERED


def classify(status: int) -> ProbeOutcome | None:
    """The outcome a response status means; None for a provisional response (keep waiting)."""
    if status < 200:
        return None
    if status in (408, 503):
        return ProbeOutcome.REFUSED
    return ProbeOutcome.ANSWERED


@dataclass(frozen=True, slots=True)
class Probe:
    """One OPTIONS to send: `data` to `member.address`, from the listener `local`."""

    member: Member
    data: bytes
    branch: bytes


@dataclass(slots=True)
class _InFlight:
    member: Member
    branch: bytes
    deadline: float


class Prober:
    """When each upstream is probed next and which probe is in flight. `interval` 0 disables
    probing (every member then stays as it is: up)."""

    __slots__ = ("_counter", "_in_flight", "_key", "_next", "interval", "timeout")

    def __init__(self, key: bytes, interval: float, timeout: float) -> None:
        self._key = hashlib.sha256(b"sipguard probe key v1" + key).digest()
        self.interval = interval
        self.timeout = timeout
        self._counter = 0
        self._next: dict[Address, float] = {}
        self._in_flight: dict[bytes, _InFlight] = {}

    def configure(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout

    def due(self, pool: Pool, local_for: dict[Address, Address], now: float) -> list[Probe]:
        """The probes to send now: one per member whose turn has come and that has none in
        flight. `local_for` maps a member's address to the listener its Via names (members
        without one cannot be probed and are skipped)."""
        if self.interval <= 0:
            return []
        busy = {f.member.address for f in self._in_flight.values()}
        probes = []
        for member in pool.members:
            address = member.address
            if address in busy or self._next.get(address, now) > now:
                continue
            local = local_for.get(address)
            if local is None:
                continue
            self._counter += 1
            mac = hmac.digest(self._key, self._counter.to_bytes(8, "big"), "sha256")
            branch = PROBE_BRANCH_PREFIX + mac[:10].hex().encode("ascii")
            self._in_flight[branch] = _InFlight(member, branch, now + self.timeout)
            self._next[address] = now + self.interval
            probes.append(Probe(member, build_probe(address, local, branch, self._counter), branch))
        return probes

    def answered(
        self, pool: Pool, branch: bytes, source: Address, status: int, now: float | None = None
    ) -> tuple[bool, HealthChange | None]:
        """A response with a probe branch: (whether it answers a probe of ours in flight, from
        the probed address; the health change it caused). A final status ends the probe; a
        provisional one is consumed and decides nothing."""
        flight = self._in_flight.get(branch)
        if flight is None:
            return False, None
        expected = flight.member.address
        if (source.host, source.port) != (expected.host, expected.port):
            return False, None
        outcome = classify(status)
        if outcome is None:
            return True, None
        del self._in_flight[branch]
        return True, pool.record(expected, outcome.ok, outcome.value, now)

    def failed(self, pool: Pool, branch: bytes, now: float | None = None) -> HealthChange | None:
        """The probe could not be delivered: a failure now, without waiting for the timeout."""
        flight = self._in_flight.pop(branch, None)
        if flight is None:
            return None
        return pool.record(flight.member.address, False, ProbeOutcome.TRANSPORT.value, now)

    def expire(self, pool: Pool, now: float, lag: float = 0.0) -> list[HealthChange]:
        """Probes without a final answer by their deadline count as failures. `lag` is how late
        sipguard reads what reaches it now (its own queueing delay, measured by the caller):
        an answer that came in time may still wait in our socket buffer, so the deadline is
        pushed back by it, by at most MAX_LAG_PERIODS timeouts (a dead upstream is still found)."""
        changes = []
        cutoff = now - min(lag, MAX_LAG_PERIODS * self.timeout)
        for branch, flight in list(self._in_flight.items()):
            if flight.deadline <= cutoff:
                del self._in_flight[branch]
                change = pool.record(flight.member.address, False, ProbeOutcome.TIMEOUT.value, now)
                if change is not None:
                    changes.append(change)
        return changes

    def forget_removed(self, pool: Pool) -> None:
        """After a reload: drop schedules and probes of members that are gone."""
        addresses = {m.address for m in pool.members}
        self._next = {a: t for a, t in self._next.items() if a in addresses}
        self._in_flight = {
            b: f for b, f in self._in_flight.items() if f.member.address in addresses
        }

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)


def is_probe_branch(branch: bytes | None) -> bool:
    return branch is not None and branch.startswith(PROBE_BRANCH_PREFIX)
