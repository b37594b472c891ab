"""The HA1 table built from the configured trunks (sans-IO).

Owns: turning `Trunk.credentials` into HA1 values per algorithm once per (re)load, the lookup
by username (or RFC 7616 §3.4.4 userhash) and algorithm, the dummy HA1 that lets the caller
spend the same work on an unknown user as on a known one (SECURITY-CASES 26), and `check`:
a digest answer against every secret a username holds (several during a rotation, each with
its own `not_before`/`valid_until`), at the same cost whatever the outcome (issue 16).

Never does: read files or the environment, decide admission, log, or keep a password after
hashing it. HA1 values are `repr=False`.

RFC 7616 §3.4.2: HA1 = H(username ":" realm ":" password) for the base algorithm; a `-sess`
answer uses the same stored HA1 (the session A1 is derived per nonce by `digest`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final

from sipguard.auth.answer import DigestAnswer, verify
from sipguard.auth.digest import (
    ALGORITHMS,
    BASE_ALGORITHMS,
    base_algorithm,
    canonical_algorithm,
    compute_ha1,
    compute_userhash,
    hash_hex,
    is_hex_digest,
)
from sipguard.settings import Trunk

__all__ = ["Checked", "CredentialStore", "Entry", "SecretCheck"]

_DUMMY_TAG: Final = b"sipguard-dummy-ha1\x00"


@dataclass(frozen=True, slots=True)
class Entry:
    """One username's HA1 for one base algorithm, in one trunk."""

    trunk: str
    username: str
    algorithm: str  # a base algorithm: MD5, SHA-256 or SHA-512-256
    ha1: str = field(repr=False)
    valid_until: datetime | None = None
    # valid_until as seconds since the epoch, so the core compares it with its `now: float`.
    expires: float | None = field(default=None, repr=False, compare=False)
    # not_before as seconds since the epoch; None: valid from the start.
    starts: float | None = field(default=None, repr=False, compare=False)

    def valid_at(self, now: float) -> bool:
        """False before the credential's `not_before` and once its `valid_until` has passed
        (the core refuses it like a wrong password, DESIGN §4 step 3)."""
        return (self.expires is None or now < self.expires) and (
            self.starts is None or now >= self.starts
        )


class SecretCheck(Enum):
    """How a digest answer compared with a username's secrets. The value is the log detail;
    every outcome but OK is refused the same way (no enumeration, DESIGN §4 step 3)."""

    OK = "ok"
    UNKNOWN_USER = "unknown user"
    WRONG = "wrong password"
    NOT_CURRENT = "credential expired or not yet valid"


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of `CredentialStore.check` and, when OK, the entry whose secret matched."""

    outcome: SecretCheck
    entry: Entry | None = None


class CredentialStore:
    """Immutable after `build`; rebuilt and swapped on reload."""

    __slots__ = ("_by_answer", "_by_name", "_by_userhash", "_dummy", "_width", "realm")

    def __init__(
        self,
        realm: str,
        entries: Iterable[Entry],
        *,
        secret: bytes | None = None,
    ) -> None:
        self.realm = realm
        self._by_name: dict[tuple[str, str], tuple[Entry, ...]] = {}
        self._by_userhash: dict[tuple[str, str], tuple[Entry, ...]] = {}
        for entry in entries:
            key = (entry.username, entry.algorithm)
            self._by_name[key] = (*self._by_name.get(key, ()), entry)
            hkey = (compute_userhash(entry.algorithm, entry.username, realm), entry.algorithm)
            self._by_userhash[hkey] = (*self._by_userhash.get(hkey, ()), entry)
        # Derived from the nonce key when given, so nobody can predict it; it must never
        # authenticate anyone anyway (the caller refuses a missing entry whatever `verify` says).
        seed = _DUMMY_TAG + (secret or b"") + realm.encode("utf-8", "surrogatepass")
        dummy = {a: hash_hex(a, seed) for a in BASE_ALGORITHMS}
        # By every algorithm name an answer may carry (`-sess` uses its base's HA1), so that
        # `check` finds the entries and the dummy in one look-up each.
        self._dummy = {a: dummy[base_algorithm(a)] for a in ALGORITHMS}
        self._by_answer: dict[tuple[str, str], tuple[Entry, ...]] = {
            (username, a): entries
            for (username, base), entries in self._by_name.items()
            for a in ALGORITHMS
            if base_algorithm(a) == base
        }
        # The most secrets one username holds for one algorithm: `check` computes this many
        # digests for every answer, so their count tells nothing about the user.
        self._width = max((len(v) for v in self._by_name.values()), default=1)

    def __repr__(self) -> str:
        return f"CredentialStore(realm={self.realm!r}, entries={len(self)})"

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_name.values())

    @classmethod
    def build(
        cls, trunks: Iterable[Trunk], realm: str, *, secret: bytes | None = None
    ) -> CredentialStore:
        """Hash every password once for each base algorithm; take configured HA1 values as
        they are (lowercased). A configured HA1 of the wrong length is a programming error
        here (`sipguard.config` reports it to the operator) and raises ValueError."""
        entries: list[Entry] = []
        for trunk in trunks:
            for cred in trunk.credentials:
                expires = cred.valid_until.timestamp() if cred.valid_until is not None else None
                starts = cred.not_before.timestamp() if cred.not_before is not None else None
                if cred.password is not None:
                    ha1s = {
                        a: compute_ha1(a, cred.username, realm, cred.password)
                        for a in BASE_ALGORITHMS
                    }
                else:
                    ha1s = _given_ha1(cred.username, cred.ha1)
                entries.extend(
                    Entry(trunk.name, cred.username, a, ha1, cred.valid_until, expires, starts)
                    for a, ha1 in ha1s.items()
                )
        return cls(realm, entries, secret=secret)

    def candidates(self, username: str, algorithm: str) -> tuple[Entry, ...]:
        """Every entry for this username and algorithm (`-sess` uses its base), in config
        order; several when one username is configured in several trunks."""
        return self._by_name.get((username, base_algorithm(algorithm)), ())

    def lookup(
        self, username: str, algorithm: str, trunks: Collection[str] | None = None
    ) -> Entry | None:
        """The first entry for `username` and `algorithm`, restricted to `trunks` (the
        candidate trunks of the source) when given. None: unknown user, or no HA1 for that
        algorithm; call `dummy_ha1` and verify anyway so both paths cost the same."""
        return _first(self.candidates(username, algorithm), trunks)

    def lookup_userhash(
        self, userhash: str, algorithm: str, trunks: Collection[str] | None = None
    ) -> Entry | None:
        """As `lookup`, for an answer with `userhash=true` (RFC 7616 §3.4.4)."""
        base = base_algorithm(algorithm)
        return _first(self._by_userhash.get((userhash.lower(), base), ()), trunks)

    def dummy_ha1(self, algorithm: str) -> str:
        """An HA1-shaped value for an unknown user: verify against it, then refuse."""
        return self._dummy[base_algorithm(algorithm)]

    def check(
        self,
        answer: DigestAnswer,
        method: str,
        body: bytes,
        trunks: Collection[str] | None,
        now: float,
    ) -> Checked:
        """Verify `answer` against every secret of its username in `trunks` (all trunks when
        None): OK with the first current secret it matches. Always the same number of digests
        (the store's widest username, dummy HA1s filling the rest), whether the user is
        unknown, holds one secret or several, and whether they are current: an expired,
        not-yet-valid or removed secret costs and answers what a wrong one does."""
        algorithm = answer.algorithm
        entries: Sequence[Entry] = self._by_answer.get((answer.username, algorithm), ())
        if trunks is not None:
            entries = [e for e in entries if e.trunk in trunks]
        dummy = self._dummy[algorithm]
        matched: Entry | None = None
        stale = False
        for i in range(self._width):
            entry = entries[i] if i < len(entries) else None
            correct = verify(answer, entry.ha1 if entry else dummy, method, body)
            if correct and entry is not None and matched is None:
                if entry.valid_at(now):
                    matched = entry
                else:
                    stale = True
        if matched is not None:
            return Checked(SecretCheck.OK, matched)
        if not entries:
            return _UNKNOWN_USER
        return _NOT_CURRENT if stale else _WRONG


_UNKNOWN_USER: Final = Checked(SecretCheck.UNKNOWN_USER)
_WRONG: Final = Checked(SecretCheck.WRONG)
_NOT_CURRENT: Final = Checked(SecretCheck.NOT_CURRENT)


def _first(entries: tuple[Entry, ...], trunks: Collection[str] | None) -> Entry | None:
    for entry in entries:
        if trunks is None or entry.trunk in trunks:
            return entry
    return None


def _given_ha1(username: str, given: Mapping[str, str]) -> dict[str, str]:
    ha1s: dict[str, str] = {}
    for name, value in given.items():
        algorithm = canonical_algorithm(name)
        if algorithm is None or algorithm not in BASE_ALGORITHMS:
            raise ValueError(f"credential {username!r}: unknown ha1 algorithm {name!r}")
        if not is_hex_digest(algorithm, value):
            # Never echo the value: it is a password equivalent.
            raise ValueError(f"credential {username!r}: ha1 {algorithm} is not a hex digest")
        ha1s[algorithm] = value.lower()
    return ha1s
