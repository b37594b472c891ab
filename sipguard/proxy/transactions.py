"""Client transactions of forwarded initial requests: one branch per attempt, the candidates
left, the timers, and the failover decision.

Owns: `ClientTransactions`, a bounded table of the initial requests sipguard forwarded (INVITE,
REGISTER and every other method that starts a transaction), each with its attempts (branch,
upstream, the bytes sent) and the candidates not tried yet; `decide` for a response received on
one of its branches; `due` for its timers. This is the sequential search of RFC 3261 §16.6
(one target after the other) with the response processing of §16.7, reduced to what failover
needs:
- a `503`, `408` or `500` final response on the current branch, no answer at all within
  `failover_timeout`, or a transport failure moves the request to the next candidate on a new
  branch, but never once a provisional response other than `100` or another final response was
  relayed for it, nor after the client cancelled it (no duplicate calls, no early dialog lost);
- a `100 Trying` is hop-by-hop (§16.7 step 5 forwards every provisional response but 100; §16.2
  lets a proxy send its own): it stops the failover timer and is relayed (so the client stops
  retransmitting), but does not forbid a failover on a later 503;
- a failed INVITE branch gets its ACK (§17.1.1.3) from the caller and is never relayed; a final
  response of an abandoned branch is absorbed (INVITE: acknowledged), except a 2xx, which
  §16.7 step 5 has forwarded always (the client then ends the extra dialog);
- timers (§17.1.1.2, §17.1.2.2, §16.6 step 11): the failover timer while nothing was heard;
  on the last candidate the request waits for Timer B/F (64*T1) and then the client gets `408`
  (§16.8); a provisional answer keeps the entry for Timer F (non-INVITE) or Timer C (INVITE,
  restarted by every provisional response but 100, §16.7 step 2): when Timer C fires, the branch
  is CANCELled and the client gets `408` (§16.8); an entry whose final response was relayed
  stays `LINGER` seconds, so retransmissions, the client's ACK and a late CANCEL still find the
  branch that answered;
- once the client got our own final answer (`408`, `503`), what the upstream sends later is
  `LATE`: a 2xx to the INVITE is still relayed (§16.7 step 5), anything else is absorbed (the
  487 to our CANCEL acknowledged), so the client never sees two final answers.

It also measures how long forwarded requests wait for their first response (`take_waited`):
on a saturated host that is mostly sipguard's own queueing delay (a 4 MB socket buffer can
hold seconds of datagrams), which the prober must not count against an upstream.

The table is bounded: when full, the oldest entry is forgotten (its first branch is still the
stateless one, so its answers keep flowing; it just cannot fail over any more).

Never does: I/O, clocks (`now` is passed in), building or parsing messages (the core does,
with `context`, which this table keeps for it and never reads), choosing upstreams (the pool
does; candidates are given, and `next_candidate` skips those that went down meanwhile).
"""

from __future__ import annotations

import heapq
import hmac
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from sipguard.proxy.actions import Address
from sipguard.proxy.pool import MAX_LAG_PERIODS
from sipguard.proxy.via import BRANCH_DIGEST_HEX, BRANCH_PREFIX

C = TypeVar("C")

T1 = 0.5  # RFC 3261 §17.1.1.1: RTT estimate, seconds
TIMER_B = 64 * T1  # §17.1.1.2 (INVITE) and Timer F §17.1.2.2 (non-INVITE): 32 s
TIMER_C = 180.0  # §16.6 step 11: the proxy's INVITE timer, "greater than 3 minutes" (configurable)
LINGER = 64 * T1  # after the final response: Timer D's 32 s covers every retransmission
FAILOVER_STATUSES = frozenset({408, 500, 503})

TRANSPORT_ERROR = "transport_error"
TIMEOUT = "timeout"


class Phase(Enum):
    CALLING = "calling"  # nothing heard on the current branch yet
    PROCEEDING = "proceeding"  # a provisional response was heard
    COMPLETED = "completed"  # a final response was relayed (or the client was answered)


class Verdict(Enum):
    """What the caller does with a response (or a failure) on a branch of a transaction."""

    RELAY = "relay"  # send it on to the client
    FAILOVER = "failover"  # the current attempt failed: ask `next_candidate`, send again
    ABSORB = "absorb"  # a response of an abandoned branch: drop it (ACK it when `ack`)
    ANSWER = "answer"  # the last attempt failed without a response: answer the client ourselves
    CANCEL = "cancel"  # Timer C fired on a ringing INVITE branch: CANCEL it, answer the client 408
    LATE = "late"  # after our own answer: relay a 2xx to the INVITE, absorb (ACK) the rest


@dataclass(frozen=True, slots=True)
class Attempt:
    """One branch of a transaction: the request as sent (`data`) on `branch` to `to`."""

    branch: bytes
    to: Address
    data: bytes


@dataclass(slots=True, eq=False)
class ClientTransaction(Generic[C]):
    key: Hashable  # the server-side transaction (source, client branch, Call-ID): the core's
    invite: bool
    context: C  # what the core needs to send the request again; never read here
    attempts: list[Attempt]
    candidates: list[Address]  # not tried yet, best first
    phase: Phase = Phase.CALLING
    committed: bool = False  # a 101-199 or a final response relayed, or cancelled: no failover
    answered: bool = False  # the client got our own final answer (408, 503)
    rang: float = 0.0  # when the current branch's last 101-199 came (Timer C restarts there)
    attempt_started: float = 0.0
    deadline: float = 0.0
    version: int = 0
    failed: list[tuple[Address, str]] = field(default_factory=list)  # abandoned: upstream, why

    @property
    def current(self) -> Attempt:
        return self.attempts[-1]

    @property
    def can_fail_over(self) -> bool:
        return not self.committed and bool(self.candidates)


@dataclass(frozen=True, slots=True)
class Decision(Generic[C]):
    verdict: Verdict
    transaction: ClientTransaction[C]
    attempt: Attempt  # the attempt the response, failure or timer belongs to
    reason: str = ""  # why an attempt failed: "503", "408", "500", "timeout", "transport_error"
    ack: bool = False  # acknowledge this INVITE branch's non-2xx final response (§17.1.1.3)


def attempt_branch(key: bytes, first: bytes, attempt: int) -> bytes:
    """The branch of attempt `attempt` (0 is the first, stateless one, `first` itself)."""
    if attempt == 0:
        return first
    material = b"attempt\x00%s\x00%d" % (first, attempt)
    return BRANCH_PREFIX + hmac.digest(key, material, "sha256")[
        : BRANCH_DIGEST_HEX // 2
    ].hex().encode("ascii")


class ClientTransactions(Generic[C]):
    """The bounded table. All methods take `now`; `due` must be called now and then (the core's
    timer tick) so that failovers on timeout happen and entries expire."""

    __slots__ = (
        "_branches",
        "_entries",
        "_heap",
        "_max_entries",
        "_seq",
        "failover_timeout",
        "find",
        "match",
        "timer_c",
        "waited",
    )

    def __init__(self, max_entries: int, failover_timeout: float, timer_c: float = TIMER_C) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self.failover_timeout = failover_timeout
        self.timer_c = timer_c
        # the longest wait, from forwarding to the first response, since `take_waited`
        self.waited = 0.0
        self._entries: OrderedDict[Hashable, ClientTransaction[C]] = OrderedDict()
        self._branches: dict[bytes, tuple[ClientTransaction[C], Attempt]] = {}
        self._heap: list[tuple[float, int, int, ClientTransaction[C]]] = []
        self._seq = 0
        # The lookups, read for every forwarded request and relayed response, are the dicts'
        # own `get` (both dicts live as long as the table): no Python frame of ours around them.
        # `find`: the transaction of a request key; `match`: the transaction and attempt a
        # branch of ours belongs to; None when there is none.
        self.find: Callable[[Hashable], ClientTransaction[C] | None] = self._entries.get
        self.match: Callable[[bytes], tuple[ClientTransaction[C], Attempt] | None]
        self.match = self._branches.get

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ life cycle

    def start(
        self,
        key: Hashable,
        invite: bool,
        context: C,
        first: Attempt,
        candidates: list[Address],
        now: float,
    ) -> ClientTransaction[C]:
        """A new initial request was forwarded as `first`; `candidates` are the others to try."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._unlink(old)
        elif len(self._entries) >= self._max_entries:
            _key, oldest = self._entries.popitem(last=False)
            self._unlink(oldest)
        txn: ClientTransaction[C] = ClientTransaction(key, invite, context, [], list(candidates))
        self._entries[key] = txn
        self._add(txn, first, now)
        return txn

    def next_candidate(
        self, txn: ClientTransaction[C], usable: Callable[[Address], bool]
    ) -> Address | None:
        """The next candidate still `usable` (up), or None (the remaining ones are dropped)."""
        while txn.candidates:
            to = txn.candidates.pop(0)
            if usable(to):
                return to
        return None

    def add_attempt(self, txn: ClientTransaction[C], attempt: Attempt, now: float) -> None:
        """The request was sent again, as `attempt` (after a failover)."""
        if self._entries.get(txn.key) is txn:
            self._add(txn, attempt, now)

    def exhausted(self, txn: ClientTransaction[C], decision: Decision[C], now: float) -> None:
        """A FAILOVER found no usable candidate. After a timeout the last attempt waits for
        Timer B/F (the client gets 408 then, from `due`); after a response or a transport
        failure the client gets its answer now (the caller relays it, or answers 503)."""
        txn.candidates.clear()
        if decision.reason == TIMEOUT:
            self._schedule(txn, txn.attempt_started + TIMER_B)
        else:
            self.complete(txn, now)

    def complete(self, txn: ClientTransaction[C], now: float) -> None:
        """The client got its final answer: no failover; kept LINGER seconds for the ACK."""
        txn.committed = True
        if txn.phase is not Phase.COMPLETED:
            txn.phase = Phase.COMPLETED
            self._schedule(txn, now + LINGER)

    def cancel(self, txn: ClientTransaction[C]) -> None:
        """The client cancelled: whatever the current branch answers now goes to the client."""
        txn.committed = True

    def answer(self, txn: ClientTransaction[C], now: float) -> None:
        """The client gets our own final answer: what the upstream sends later is LATE."""
        txn.answered = True
        self.complete(txn, now)

    def take_waited(self) -> float:
        """The longest wait for a first response since the last call (then reset)."""
        waited, self.waited = self.waited, 0.0
        return waited

    # ------------------------------------------------------------------ decisions

    def decide(self, branch: bytes, status: int, now: float) -> Decision[C] | None:
        """A response on `branch`; None when the branch is no transaction's (stateless path)."""
        found = self._branches.get(branch)
        if found is None:
            return None
        txn, attempt = found
        if attempt is not txn.current:
            if 200 <= status < 300 and txn.invite:
                return Decision(Verdict.RELAY, txn, attempt)  # §16.7 step 5: every 2xx
            return Decision(Verdict.ABSORB, txn, attempt, ack=txn.invite and status >= 300)
        if txn.answered:
            return Decision(Verdict.LATE, txn, attempt, ack=txn.invite and status >= 300)
        if txn.phase is Phase.CALLING:  # its first response: how long did it wait?
            self.waited = max(self.waited, now - txn.attempt_started)
        if status < 200:
            if status > 100:
                txn.committed = True
                txn.rang = now
            if txn.phase is Phase.CALLING:
                txn.phase = Phase.PROCEEDING
                txn.rang = now  # Timer C runs from the first provisional response (even a 100)
                end = now + self.timer_c if txn.invite else txn.attempt_started + TIMER_B
                self._schedule(txn, end)
            return Decision(Verdict.RELAY, txn, attempt)
        if status in FAILOVER_STATUSES and txn.can_fail_over:
            txn.failed.append((attempt.to, str(status)))
            return Decision(Verdict.FAILOVER, txn, attempt, str(status), ack=txn.invite)
        self.complete(txn, now)
        return Decision(Verdict.RELAY, txn, attempt)

    def transport_failed(self, branch: bytes, now: float) -> Decision[C] | None:
        """The request on `branch` could not be delivered. FAILOVER when allowed; ANSWER (the
        client gets 503 from us) when it was the last candidate and the client has no answer
        yet; ABSORB otherwise. None when the branch is no transaction's."""
        found = self._branches.get(branch)
        if found is None:
            return None
        txn, attempt = found
        if attempt is not txn.current or txn.phase is Phase.COMPLETED:
            return Decision(Verdict.ABSORB, txn, attempt, TRANSPORT_ERROR)
        if txn.can_fail_over:
            txn.failed.append((attempt.to, TRANSPORT_ERROR))
            return Decision(Verdict.FAILOVER, txn, attempt, TRANSPORT_ERROR)
        if txn.committed:
            return Decision(Verdict.ABSORB, txn, attempt, TRANSPORT_ERROR)
        self.answer(txn, now)
        return Decision(Verdict.ANSWER, txn, attempt, TRANSPORT_ERROR)

    def due(self, now: float, lag: float = 0.0) -> list[Decision[C]]:
        """Timers that fired: FAILOVER (no answer within failover_timeout, a candidate left),
        ANSWER (no answer within Timer B/F on the last attempt: the client gets 408) or CANCEL
        (Timer C: a ringing INVITE branch without a final answer). Entries past Timer F or
        LINGER are forgotten here. `lag` is sipguard's own queueing delay now (see
        `take_waited`): an answer may be waiting in our socket buffer, so a failover waits that
        much longer (at most MAX_LAG_PERIODS failover_timeouts): a saturated sipguard must not
        send every call a second time."""
        decisions: list[Decision[C]] = []
        heap = self._heap
        grace = min(lag, MAX_LAG_PERIODS * self.failover_timeout)
        while heap and heap[0][0] <= now:
            _deadline, _seq, version, txn = heapq.heappop(heap)
            if version != txn.version or self._entries.get(txn.key) is not txn:
                continue  # rescheduled or gone since
            if txn.phase is Phase.PROCEEDING and txn.invite:
                self._timer_c(txn, now, decisions)
            elif txn.phase is not Phase.CALLING:
                self._remove(txn)
            else:
                self._unanswered(txn, now, grace, decisions)
        if len(heap) > 4 * self._max_entries + 64:
            self._compact()
        return decisions

    # ------------------------------------------------------------------ internals

    def _unanswered(
        self, txn: ClientTransaction[C], now: float, grace: float, out: list[Decision[C]]
    ) -> None:
        """Nothing heard on the current branch by its timer: fail over (`grace` seconds later
        than failover_timeout), or answer 408 after Timer B/F on the last candidate."""
        attempt = txn.current
        if txn.can_fail_over:
            late = txn.attempt_started + self.failover_timeout + grace
            if late > now:
                self._schedule(txn, late)
                return
            txn.failed.append((attempt.to, TIMEOUT))
            out.append(Decision(Verdict.FAILOVER, txn, attempt, TIMEOUT))
        elif now >= txn.attempt_started + TIMER_B or txn.committed:
            self.answer(txn, now)
            out.append(Decision(Verdict.ANSWER, txn, attempt, TIMEOUT))
        else:
            self._schedule(txn, txn.attempt_started + TIMER_B)

    def _timer_c(self, txn: ClientTransaction[C], now: float, out: list[Decision[C]]) -> None:
        """Timer C of a ringing INVITE: restarted by the last 101-199 (§16.7 step 2, checked
        here rather than rescheduled on each one); when it has run out, CANCEL (§16.8)."""
        end = txn.rang + self.timer_c
        if end > now:
            self._schedule(txn, end)
            return
        self.answer(txn, now)
        out.append(Decision(Verdict.CANCEL, txn, txn.current, TIMEOUT))

    def _add(self, txn: ClientTransaction[C], attempt: Attempt, now: float) -> None:
        txn.attempts.append(attempt)
        txn.phase = Phase.CALLING
        txn.attempt_started = now
        self._branches[attempt.branch] = (txn, attempt)
        wait = self.failover_timeout if txn.candidates else TIMER_B
        self._schedule(txn, now + min(wait, TIMER_B))

    def _schedule(self, txn: ClientTransaction[C], deadline: float) -> None:
        txn.version += 1
        txn.deadline = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, txn.version, txn))

    def _remove(self, txn: ClientTransaction[C]) -> None:
        if self._entries.get(txn.key) is txn:
            del self._entries[txn.key]
        self._unlink(txn)

    def _unlink(self, txn: ClientTransaction[C]) -> None:
        txn.version += 1  # its heap entries are stale now
        for attempt in txn.attempts:
            if self._branches.get(attempt.branch, (None,))[0] is txn:
                del self._branches[attempt.branch]

    def _compact(self) -> None:
        """Rebuild the heap from the live entries (stale ones pile up under reschedules)."""
        self._heap = [
            (txn.deadline, seq, txn.version, txn) for seq, txn in enumerate(self._entries.values())
        ]
        heapq.heapify(self._heap)
        self._seq = len(self._heap)
