"""Bounded, time-limited memory of what the core admitted: transactions and dialogs.

Owns: the only per-call state of the proxy core. An admitted INVITE transaction is remembered so
that its CANCEL and the ACK for a non-2xx final response can be matched (RFC 3261 §16.10, §17.2.3);
an admitted dialog is remembered so that its in-dialog requests (BYE, re-INVITE) are not
re-challenged and survive a reload that changes the whitelist (DESIGN §4).

Never does: look at clocks (`now` is passed in) or grow without bound: every table has a size
cap (oldest entries are evicted first) and entries expire. Nothing is created for requests that
were not admitted, so a flood of strays or unauthenticated requests creates no state
(SECURITY-CASES 33, 34).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, NamedTuple, TypeVar

# How long the core remembers what it admitted (seconds).
INVITE_TRANSACTION_TTL = 200.0  # > Timer C (3 min, RFC 3261 §16.6 step 11): CANCEL may come late
DIALOG_TTL = 4 * 3600.0  # refreshed by every in-dialog request; a call idle for 4 h is forgotten
DIALOG_LINGER = 40.0  # after a BYE: retransmissions of it still pass
# How long an admitted digest answer is recognised when its request is retransmitted: Timer F
# (64*T1 = 32 s, RFC 3261 §17.1.2.2), the longest a UDP client retransmits a non-INVITE request.
RETRANSMISSION_TTL = 32.0

K = TypeVar("K")
V = TypeVar("V")


class Admission(NamedTuple):
    """What was admitted, and for whom: kept with a transaction or a dialog. A NamedTuple: one
    is built per admitted INVITE or dialog, at a third of a frozen dataclass's calls."""

    source_ip: str
    trunk: str
    user: str


class ExpiringTable(Generic[K, V]):
    """A dict with a size cap and per-entry expiry, O(1) amortised per operation.

    Entries are kept in insertion order; `put` on an existing key moves it to the end, so the
    front holds the entries that were touched longest ago: eviction and expiry both take from
    the front."""

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: K, value: V, expires_at: float) -> None:
        entries = self._entries
        if key in entries:
            del entries[key]
        elif len(entries) >= self._max_entries:
            entries.popitem(last=False)
        entries[key] = (expires_at, value)

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def touch(self, key: K, expires_at: float) -> None:
        """Push an entry's expiry later (a dialog that is still in use)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._entries[key] = (max(entry[0], expires_at), entry[1])

    def expire_at_most(self, key: K, expires_at: float) -> None:
        """Bring an entry's expiry earlier (a dialog that got its BYE keeps it for retransmits)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > expires_at:
            self._entries[key] = (expires_at, entry[1])

    def sweep(self, now: float, budget: int = 10000) -> int:
        """Drop expired entries from the front, at most `budget` of them; returns how many.

        Entries are not strictly ordered by expiry (touch and expire_at_most move them), so a
        sweep only clears the long-untouched front; `get` drops any expired entry it meets."""
        entries = self._entries
        removed = 0
        while entries and removed < budget:
            key, (expires_at, _value) = next(iter(entries.items()))
            if expires_at > now:
                break
            del entries[key]
            removed += 1
        return removed
