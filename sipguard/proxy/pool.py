"""The upstream pool: each upstream's health, with hysteresis, and which upstream a call goes to.

Owns: `Member` (one configured upstream: address, URI label, priority, weight), the health
state machine of each member (`down_after` consecutive failed probes mark it down, `up_after`
consecutive good ones bring it back; a down member keeps being probed and is never disabled for
good), and the selection of candidates for an initial request: among the members that are up,
those of the best (lowest) priority, ordered by weighted rendezvous hashing of the Call-ID
(Thaler & Ravishankar, "Using name-based mappings to increase hit rates", 1998; the weighted
form is Resch's "logarithmic method"). One Call-ID always yields the same order while the set
of members that are up stays the same; a member going down moves only its own calls; the hash
is BLAKE2b, so a restart does not reshuffle (Python's `hash()` is salted per process).

Also owns what the admin API shows of each member (`MemberStatus`): since when it is in its
health, its last probe result and when it came, its consecutive failures and successes.

Never does: I/O, clocks (health changes only on probe results, which the caller reports with
its `now`, kept for the admin API only), logging or metrics: a state change is returned as a
`HealthChange` value.

Decisions where the issue is silent:
- Every member starts up: a fresh process forwards at once, as before pools existed; probing
  takes it down within `down_after` probes if it is not.
- A failover goes only to members of the same (best) priority that are up: a priority-2
  member gets traffic only while no priority-1 member is up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from hashlib import blake2b

from sipguard.proxy.actions import Address

# sipguard's own queueing delay (transactions' `take_waited`) stretches a failover or probe
# timeout by at most this many of its period: a saturated host must not fail over or mark down
# an upstream that did answer, and a dead upstream must still be found.
MAX_LAG_PERIODS = 4

# 2**64 + 1: maps a 64-bit hash into the open interval (0, 1), never 0 nor 1 (log must be < 0).
_SCALE = float(2**64 + 1)


class Health(Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Member:
    """One configured upstream. `uri` is its configured spelling: the metric label and the name
    in logs (a bounded set, from the config)."""

    uri: str
    address: Address
    priority: int = 1  # lower is preferred
    weight: int = 1  # share of the calls among members of the same priority

    def __post_init__(self) -> None:
        if self.priority < 0:
            raise ValueError("priority must be >= 0")
        if self.weight < 1:
            raise ValueError("weight must be >= 1")


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Hysteresis: consecutive probe failures to go down, consecutive successes to come up."""

    down_after: int = 3
    up_after: int = 2

    def __post_init__(self) -> None:
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError("down_after and up_after must be >= 1")


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A member went down or came back up; `reason` is the probe outcome that decided it."""

    member: Member
    health: Health
    reason: str


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member's health as the admin API shows it (`GET /v1/upstreams`). Times are the
    callers' `now` (None: not known yet, e.g. no probe answered since start)."""

    member: Member
    health: Health
    since: float | None  # when it went to its current health (None: up since start)
    last_probe: float | None  # when the last probe result came
    last_outcome: str | None  # that result's reason ("answered", "timeout", ...)
    failures: int  # consecutive failed probes (0 after a good one)
    successes: int  # consecutive good probes (0 after a failed one)


@dataclass(slots=True)
class _State:
    health: Health = Health.UP
    streak: int = 0  # consecutive results against the current health (failures while up...)
    since: float | None = None
    last_probe: float | None = None
    last_outcome: str | None = None
    failures: int = 0
    successes: int = 0


class Pool:
    """The members and their health. `reconfigure` keeps the state of members that stay."""

    __slots__ = ("_best", "_best_seeds", "_members", "_policy", "_same_weight", "_seeds", "_states")

    def __init__(self, members: Sequence[Member], policy: HealthPolicy) -> None:
        self._states: dict[Address, _State] = {}
        self._members: tuple[Member, ...] = ()
        self._seeds: dict[Address, bytes] = {}
        self._policy = policy
        self._best: tuple[Member, ...] = ()
        self._best_seeds: tuple[bytes, ...] = ()
        self._same_weight = True
        self.reconfigure(members, policy)

    def reconfigure(self, members: Sequence[Member], policy: HealthPolicy) -> None:
        """New members start up; members whose address stays keep their health and streak."""
        addresses = [m.address for m in members]
        if len(set(addresses)) != len(addresses):
            raise ValueError("two upstreams with the same address")
        self._states = {m.address: self._states.get(m.address) or _State() for m in members}
        self._members = tuple(members)
        # The hash input names the member by its address, so that a reload that only re-spells
        # a URI (or changes a weight) does not move calls.
        self._seeds = {
            m.address: f"{m.address.transport.value}:{m.address.host}:{m.address.port}".encode()[
                :64
            ]
            for m in members
        }
        self._policy = policy
        self._refresh()

    @property
    def members(self) -> tuple[Member, ...]:
        return self._members

    def member(self, address: Address) -> Member | None:
        for member in self._members:
            if member.address == address:
                return member
        return None

    def health(self, address: Address) -> Health | None:
        state = self._states.get(address)
        return state.health if state is not None else None

    @property
    def any_up(self) -> bool:
        return bool(self._best)

    def status(self) -> list[MemberStatus]:
        """Every member's health, its probe history and since when (read-only)."""
        return [
            MemberStatus(
                m, s.health, s.since, s.last_probe, s.last_outcome, s.failures, s.successes
            )
            for m in self._members
            for s in (self._states[m.address],)
        ]

    def record(
        self, address: Address, ok: bool, reason: str, now: float | None = None
    ) -> HealthChange | None:
        """One probe result for the member at `address` (unknown addresses are ignored: a probe
        answered after a reload removed its member). Returns the change it caused, if any.
        `now`, when given, is kept as the time of the last probe (and of a change)."""
        state = self._states.get(address)
        if state is None:
            return None
        state.last_probe, state.last_outcome = now, reason
        state.failures = 0 if ok else state.failures + 1
        state.successes = state.successes + 1 if ok else 0
        policy = self._policy
        if (state.health is Health.UP) == ok:
            state.streak = 0  # a result that confirms the current health resets the count
            return None
        state.streak += 1
        needed = policy.down_after if state.health is Health.UP else policy.up_after
        if state.streak < needed:
            return None
        state.health = Health.DOWN if state.health is Health.UP else Health.UP
        state.streak = 0
        state.since = now
        self._refresh()
        member = self.member(address)
        assert member is not None
        return HealthChange(member, state.health, reason)

    def candidates(self, call_id: bytes) -> tuple[Member, ...]:
        """The members to try for a new transaction of this Call-ID, best first: the members
        that are up at the best priority, by weighted rendezvous hash; () when none is up."""
        best = self._best
        if len(best) <= 1:
            return best
        if not self._same_weight:
            return tuple(sorted(best, key=lambda m: self._score(m, call_id), reverse=True))
        # Equal weights: the score grows with the hash, so the hashes order the members alike
        # (big-endian bytes compare as the integers), without the logarithm.
        seeds = self._best_seeds
        if len(best) == 2:
            one = blake2b(call_id, digest_size=8, key=seeds[0]).digest()
            two = blake2b(call_id, digest_size=8, key=seeds[1]).digest()
            return best if one >= two else best[::-1]
        hashes = [blake2b(call_id, digest_size=8, key=seed).digest() for seed in seeds]
        order = sorted(range(len(best)), key=hashes.__getitem__, reverse=True)
        return tuple(best[i] for i in order)

    def _score(self, member: Member, call_id: bytes) -> float:
        digest = blake2b(call_id, digest_size=8, key=self._seeds[member.address]).digest()
        unit = (int.from_bytes(digest, "big") + 1) / _SCALE
        return -member.weight / math.log(unit)

    def _refresh(self) -> None:
        up = [m for m in self._members if self._states[m.address].health is Health.UP]
        if not up:
            self._best = ()
            return
        priority = min(m.priority for m in up)
        self._best = tuple(m for m in up if m.priority == priority)
        self._best_seeds = tuple(self._seeds[m.address] for m in self._best)
        self._same_weight = len({m.weight for m in self._best}) == 1


def members_up(pool: Pool, members: Iterable[Member]) -> list[Member]:
    """The given members that are up now (a failover skips members that went down meanwhile)."""
    return [m for m in members if pool.health(m.address) is Health.UP]
