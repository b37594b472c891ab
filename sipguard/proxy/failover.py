"""The core's upstream side: which upstream a request goes to, and what happens when it fails.

Owns: `Upstreams`, which holds the pool (health, selection), the prober (OPTIONS in flight and
their schedule) and the client-transaction table, and turns their decisions into actions:
- `candidates` for a new initial request (None up: the core answers 503 with Retry-After);
- `current` for a request that belongs to a forwarded one (a client retransmission, its CANCEL,
  the ACK of its non-2xx answer): the branch and upstream of the attempt in progress;
- `started` once the core has built and forwarded an initial request;
- `on_response` for every response: a probe's answer is consumed, a response on a transaction's
  branch is relayed, absorbed (an abandoned branch; ACKed for an INVITE) or failed over;
- `upstream_failed` for a Forward the shell could not deliver;
- `tick` for the timers: failovers on timeout, 408 on the last attempt, the CANCEL and 408 of
  an INVITE branch that rang past Timer C, probe timeouts and probes due;
- `report` for what the shell reports: health changes, failovers, per-upstream outcomes
  (the values are `proxy.upstream_report`'s), and `status` for the admin API.

Never does: I/O, clocks, logging or metrics (events and counts are values the shell drains),
parse or edit a client's request (the core's `resend` and `answer` callbacks do: the context
they get is whatever the core handed to `started`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from enum import Enum
from typing import Generic, TypeVar

from sipguard.errors import ParseError
from sipguard.proxy.actions import Action, Address, Cause, Drop, Forward, Info, Transport
from sipguard.proxy.originate import build_ack, build_cancel
from sipguard.proxy.pool import Health, HealthPolicy, Member, Pool
from sipguard.proxy.probe import Prober, is_probe_branch
from sipguard.proxy.transactions import (
    TIMEOUT,
    Attempt,
    ClientTransaction,
    ClientTransactions,
    Decision,
    Verdict,
    attempt_branch,
)
from sipguard.proxy.upstream_report import (
    MAX_EVENTS,
    FailoverEvent,
    Outcome,
    UpstreamEvent,
    UpstreamReport,
    UpstreamStatus,
)
from sipguard.settings import Settings
from sipguard.sip import Request, Response, parse_message

C = TypeVar("C")


class Relay(Enum):
    MATCHED = "matched"  # a transaction's response for the client: relay it
    UNKNOWN = "unknown"  # no transaction's: the stateless path decides


def members_of(settings: Settings) -> list[Member]:
    return [
        Member(u.uri, Address(Transport(u.transport), u.host, u.port), u.priority, u.weight)
        for u in settings.upstream
    ]


class Upstreams(Generic[C]):
    """One per core. `resend(context, to, branch)` builds the Forward of the request again for
    another upstream and branch (None when it cannot be sent there); `answer(context, status)`
    builds our own final response to the client (503 or 408); `local_for(address)` names the
    listener a probe to `address` is sent from."""

    def __init__(
        self,
        settings: Settings,
        key: bytes,
        resend: Callable[[C, Address, bytes], Forward | None],
        answer: Callable[[C, int], Action],
        local_for: Callable[[Address], Address | None],
    ) -> None:
        health = settings.upstream_health
        self._key = key
        self._resend = resend
        self._answer = answer
        self._local_for = local_for
        self.pool = Pool(members_of(settings), HealthPolicy(health.down_after, health.up_after))
        self.prober = Prober(key, health.probe_interval, health.probe_timeout)
        self.table: ClientTransactions[C] = ClientTransactions(
            settings.limits.client_transaction_table_size, health.failover_timeout, health.timer_c
        )
        self._lag = 0.0  # our own queueing delay as last measured (see `_queueing_delay`)
        self._lag_at: float | None = None
        self._events: list[UpstreamEvent] = []
        self._counts: dict[tuple[str, Outcome], int] = {}
        self._totals: dict[tuple[str, Outcome], int] = {}  # since start, never drained
        self._lost = 0
        self._uris: dict[Address, str] = {}
        self._refresh()

    def reconfigure(self, settings: Settings) -> None:
        health = settings.upstream_health
        policy = HealthPolicy(health.down_after, health.up_after)
        self.pool.reconfigure(members_of(settings), policy)
        self.prober.configure(health.probe_interval, health.probe_timeout)
        self.prober.forget_removed(self.pool)
        self.table.failover_timeout = health.failover_timeout
        self.table.timer_c = health.timer_c
        self._refresh()

    def _refresh(self) -> None:
        self._uris = {m.address: m.uri for m in self.pool.members}

    # ------------------------------------------------------------------ choosing

    def is_upstream(self, address: Address) -> bool:
        return address in self._uris

    def candidates(self, call_id: bytes) -> tuple[Member, ...]:
        return self.pool.candidates(call_id)

    def current(self, key: Hashable) -> Attempt | None:
        """The attempt in progress of the forwarded request `key` belongs to, if any."""
        txn = self.table.find(key)
        return txn.current if txn is not None else None

    def cancelled(self, key: Hashable) -> Attempt | None:
        """The client cancelled the request `key`: no failover from now on; the CANCEL goes to
        the attempt in progress (RFC 3261 §9.1: the CANCEL's branch is the INVITE's)."""
        txn = self.table.find(key)
        if txn is None:
            return None
        self.table.cancel(txn)
        return txn.current

    def started(
        self,
        key: Hashable,
        context: C,
        forward: Forward,
        branch: bytes,
        others: Sequence[Member],
        now: float,
    ) -> None:
        """The core forwarded a new initial request as `forward` on `branch`; `others` are the
        candidates left to try."""
        first = Attempt(branch, forward.to, forward.data)
        self.table.start(
            key, forward.info.method == "INVITE", context, first, [m.address for m in others], now
        )
        self._count(forward.to, Outcome.FORWARDED)

    # ------------------------------------------------------------------ responses

    def on_response(self, msg: Response, source: Address, now: float) -> list[Action] | Relay:
        """A response from `source`: the actions when it ends here (a probe's answer, a failed
        branch, an abandoned one); `Relay.MATCHED` when it is a transaction's response for the
        client (relay it: its Via is checked against the request sent on its branch, which
        `table.match` finds; a later attempt's branch is not stateless); `Relay.UNKNOWN` when
        no transaction knows its branch (the core's stateless checks decide, as before)."""
        branch = msg.top_via.branch
        if branch is None:
            return Relay.UNKNOWN
        # the table first: most responses are its transactions' (a probe's branch never is)
        decision = self.table.decide(branch, msg.status, now)
        if decision is not None:
            if decision.verdict is Verdict.RELAY:
                return Relay.MATCHED
            return self._act(decision, now, msg)
        if is_probe_branch(branch):
            matched, change = self.prober.answered(self.pool, branch, source, msg.status, now)
            if change is not None:
                self._event(change)
            info = Info("OPTIONS", msg.call_id.decode("latin-1"), status=msg.status)
            return [Drop(Cause.PROBE if matched else Cause.STRAY, info)]
        return Relay.UNKNOWN

    def upstream_failed(self, forward: Forward, branch: bytes, now: float) -> list[Action] | None:
        """A Forward of ours with top Via `branch` was not delivered. None when it is no probe
        nor attempt of a transaction (the core answers as before)."""
        if is_probe_branch(branch):
            change = self.prober.failed(self.pool, branch, now)
            if change is not None:
                self._event(change)
            return [Drop(Cause.PROBE, Info(detail="probe not delivered"))]
        decision = self.table.transport_failed(branch, now)
        if decision is None:
            return None
        acted = self._act(decision, now, None)
        return acted if isinstance(acted, list) else []

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> list[Action]:
        """Failovers and 408s whose timers fired, probe timeouts, probes due."""
        actions: list[Action] = []
        lag = self._queueing_delay(now)
        for decision in self.table.due(now, lag):
            acted = self._act(decision, now, None)
            if isinstance(acted, list):
                actions.extend(acted)
        for change in self.prober.expire(self.pool, now, lag):
            self._event(change)
        if self.prober.interval <= 0:
            return actions
        # asked each time: the shell may bind its upstream-facing sockets after we were built
        locals_ = {m.address: self._local_for(m.address) for m in self.pool.members}
        usable = {a: local for a, local in locals_.items() if local is not None}
        for probe in self.prober.due(self.pool, usable, now):
            to = probe.member.address
            info = Info("OPTIONS", detail="probe")
            actions.append(Forward(probe.data, to, usable[to], None, Cause.PROBE, info))
        return actions

    def report(self) -> UpstreamReport:
        """Events and counts since the last report (they are handed over once), and every
        member's health now (the `sipguard_upstream_up` gauge)."""
        events, self._events = self._events, []
        counts, self._counts = self._counts, {}
        lost, self._lost = self._lost, 0
        health = [(m.uri, self.pool.health(m.address) is Health.UP) for m in self.pool.members]
        return UpstreamReport(events, counts, health, lost)

    def status(self) -> list[UpstreamStatus]:
        """Every member's health and probe history, with its attempt counts since start (the
        admin API's `GET /v1/upstreams`; read-only, nothing is drained)."""
        totals = self._totals
        return [
            UpstreamStatus(s, {o: totals.get((s.member.uri, o), 0) for o in Outcome})
            for s in self.pool.status()
        ]

    # ------------------------------------------------------------------ internals

    def _queueing_delay(self, now: float) -> float:
        """How late sipguard reads what reaches it, as far as it can tell: the longest wait
        between forwarding a request and handling its first response since the last tick, or
        the previous figure less the time since (a queue drains at most in real time). Under
        load that wait is mostly the datagrams queued before the response in our own socket
        buffer (4 MB: seconds of traffic), which a probe's answer waits behind too; the rest,
        the round trip and the upstream's answer time, only makes it err on the patient side.
        A probe's timeout is stretched by it (`Prober.expire`), so a saturated sipguard does
        not mark its upstreams down, and so is a failover's (`ClientTransactions.due`), so it
        does not send every call twice; both by at most MAX_LAG_PERIODS of their timeout."""
        waited = self.table.take_waited()
        elapsed = now - self._lag_at if self._lag_at is not None else 0.0
        self._lag = max(waited, self._lag - elapsed)
        self._lag_at = now
        return self._lag

    def _act(self, decision: Decision[C], now: float, msg: Response | None) -> list[Action] | Relay:
        txn = decision.transaction
        attempt = decision.attempt
        if decision.verdict is Verdict.ABSORB:
            actions = self._ack(attempt, msg) if decision.ack and msg is not None else []
            status = msg.status if msg is not None else 0
            actions.append(Drop(Cause.FAILOVER, Info(status=status, detail="abandoned branch")))
            return actions
        if decision.verdict is Verdict.LATE and msg is not None:
            return self._late(decision, msg)
        if decision.verdict is Verdict.CANCEL:
            self._count(attempt.to, Outcome.TIMEOUT)
            return [*self._cancel(attempt), self._answer(txn.context, 408)]
        if decision.verdict is Verdict.FAILOVER:
            outcome = Outcome.TIMEOUT if decision.reason == TIMEOUT else Outcome.FAILED_OVER
            self._count(attempt.to, outcome)
            sent = self._fail_over(txn, decision, now)
            if sent is not None:
                acks = self._ack(attempt, msg) if decision.ack and msg is not None else []
                return [*acks, sent]
            if msg is not None:
                return Relay.MATCHED  # nothing left: the client gets this answer (and ACKs it)
            if decision.reason == TIMEOUT:
                return []  # the last attempt waits for Timer B/F
            return [self._answer(txn.context, 503)]
        # ANSWER: the last attempt failed without an answer; the client gets ours
        if decision.reason == TIMEOUT:
            self._count(attempt.to, Outcome.TIMEOUT)
            return [self._answer(txn.context, 408)]
        return [self._answer(txn.context, 503)]

    def _fail_over(
        self, txn: ClientTransaction[C], decision: Decision[C], now: float
    ) -> Forward | None:
        """Send the request to the next usable candidate; None when none is left."""
        while True:
            to = self.table.next_candidate(txn, lambda a: self.pool.health(a) is Health.UP)
            if to is None:
                self.table.exhausted(txn, decision, now)
                self._event(self._failover_event(txn, decision, None))
                return None
            branch = attempt_branch(self._key, txn.attempts[0].branch, len(txn.attempts))
            forward = self._resend(txn.context, to, branch)
            if forward is None:
                continue
            self.table.add_attempt(txn, Attempt(branch, to, forward.data), now)
            self._count(to, Outcome.FORWARDED)
            self._event(self._failover_event(txn, decision, to))
            info = forward.info
            info = Info(info.method, info.call_id, info.trunk, info.user, 0, decision.reason)
            return replace(forward, cause=Cause.FAILOVER, info=info)

    def _failover_event(
        self, txn: ClientTransaction[C], decision: Decision[C], to: Address | None
    ) -> FailoverEvent:
        method, call_id = _method_and_call_id(decision.attempt.data)
        return FailoverEvent(
            call_id,
            method,
            self._uris.get(decision.attempt.to, ""),
            self._uris.get(to, "") if to is not None else "",
            decision.reason,
        )

    def _late(self, decision: Decision[C], msg: Response) -> list[Action] | Relay:
        """A response on the current branch after the client got our own answer: a 2xx to the
        INVITE goes on (§16.7 step 5); the rest is absorbed, an INVITE's non-2xx final answer
        (the 487 to our CANCEL) acknowledged; the 200 to our CANCEL is not the INVITE's."""
        invite = msg.cseq.method == b"INVITE"
        if invite and 200 <= msg.status < 300:
            return Relay.MATCHED
        actions = self._ack(decision.attempt, msg) if decision.ack and invite else []
        info = Info(status=msg.status, detail="after our answer")
        actions.append(Drop(Cause.FAILOVER, info))
        return actions

    def _cancel(self, attempt: Attempt) -> list[Action]:
        """The CANCEL of an INVITE branch that rang past Timer C (RFC 3261 §16.8)."""
        try:
            invite = parse_message(attempt.data)
            if not isinstance(invite, Request):
                return []
            data = build_cancel(invite)
        except ParseError:
            return []
        local = self._local_for(attempt.to)
        info = Info("CANCEL", invite.call_id.decode("latin-1"), detail="timer C")
        return [Forward(data, attempt.to, local, None, Cause.FAILOVER, info)]

    def _ack(self, attempt: Attempt, msg: Response) -> list[Action]:
        try:
            invite = parse_message(attempt.data)
            if not isinstance(invite, Request):
                return []
            data = build_ack(invite, msg)
        except ParseError:
            return []
        local = self._local_for(attempt.to)
        info = Info("ACK", msg.call_id.decode("latin-1"), status=msg.status, detail="failed branch")
        return [Forward(data, attempt.to, local, None, Cause.FAILOVER, info)]

    def _count(self, to: Address, outcome: Outcome) -> None:
        uri = self._uris.get(to)
        if uri is not None:
            key = (uri, outcome)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._totals[key] = self._totals.get(key, 0) + 1

    def _event(self, event: UpstreamEvent) -> None:
        if len(self._events) < MAX_EVENTS:
            self._events.append(event)
        else:
            self._lost += 1


def _method_and_call_id(data: bytes) -> tuple[str, str]:
    try:
        msg = parse_message(data)
    except ParseError:
        return "", ""
    method = msg.method if isinstance(msg, Request) else msg.cseq.method
    return method.decode("latin-1"), msg.call_id.decode("latin-1")
