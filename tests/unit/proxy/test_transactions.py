"""Client transactions of forwarded initial requests: failover decisions and timers
(sipguard.proxy.transactions)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.proxy.actions import Address, Transport
from sipguard.proxy.pool import MAX_LAG_PERIODS
from sipguard.proxy.transactions import (
    LINGER,
    TIMER_B,
    TIMER_C,
    Attempt,
    ClientTransaction,
    ClientTransactions,
    Decision,
    Phase,
    Verdict,
    attempt_branch,
)

U1 = Address(Transport.UDP, "127.0.0.1", 5070)
U2 = Address(Transport.UDP, "127.0.0.1", 5080)
U3 = Address(Transport.UDP, "127.0.0.1", 5090)
KEY = b"k" * 32
T0 = 1000.0

Table = ClientTransactions[str]


def _start(
    table: Table, invite: bool = True, candidates: tuple[Address, ...] = (U2, U3), key: str = "k"
) -> ClientTransaction[str]:
    first = Attempt(b"z9hG4bKsg-" + key.encode(), U1, b"INVITE ...")
    return table.start(key, invite, "context", first, list(candidates), T0)


def _fail_over(table: Table, decision: Decision[str], now: float) -> Attempt | None:
    txn = decision.transaction
    to = table.next_candidate(txn, lambda a: True)
    if to is None:
        table.exhausted(txn, decision, now)
        return None
    attempt = Attempt(attempt_branch(KEY, txn.attempts[0].branch, len(txn.attempts)), to, b"")
    table.add_attempt(txn, attempt, now)
    return attempt


def test_503_fails_over_to_the_next_candidate_and_acks_the_invite() -> None:
    table = Table(10, 2.0)
    txn = _start(table)
    decision = table.decide(txn.current.branch, 503, T0 + 0.1)
    assert decision is not None
    assert (decision.verdict, decision.reason, decision.ack) == (Verdict.FAILOVER, "503", True)
    second = _fail_over(table, decision, T0 + 0.1)
    assert second is not None and second.to == U2
    assert second.branch != txn.attempts[0].branch
    assert table.match(second.branch) == (txn, second)
    ok = table.decide(second.branch, 200, T0 + 0.2)
    assert ok is not None and ok.verdict is Verdict.RELAY and ok.attempt is second


def test_non_invite_failover_needs_no_ack() -> None:
    table = Table(10, 2.0)
    txn = _start(table, invite=False)
    decision = table.decide(txn.current.branch, 408, T0)
    assert decision is not None and decision.verdict is Verdict.FAILOVER and not decision.ack


def test_500_and_408_fail_over_but_other_finals_are_relayed() -> None:
    for status, verdict in [
        (500, Verdict.FAILOVER),
        (408, Verdict.FAILOVER),
        (404, Verdict.RELAY),
        (486, Verdict.RELAY),
        (502, Verdict.RELAY),
        (600, Verdict.RELAY),
    ]:
        table = Table(10, 2.0)
        txn = _start(table)
        decision = table.decide(txn.current.branch, status, T0)
        assert decision is not None and decision.verdict is verdict, status


def test_no_failover_after_a_provisional_was_relayed() -> None:
    """The 180-then-503 case: the 503 goes to the client, nothing is retried."""
    table = Table(10, 2.0)
    txn = _start(table)
    ringing = table.decide(txn.current.branch, 180, T0)
    assert ringing is not None and ringing.verdict is Verdict.RELAY
    final = table.decide(txn.current.branch, 503, T0 + 1)
    assert final is not None and final.verdict is Verdict.RELAY
    assert txn.phase is Phase.COMPLETED
    assert table.due(T0 + 100) == []


def test_100_trying_does_not_forbid_failover_but_stops_the_failover_timer() -> None:
    table = Table(10, 2.0)
    txn = _start(table)
    trying = table.decide(txn.current.branch, 100, T0)
    assert trying is not None and trying.verdict is Verdict.RELAY
    assert table.due(T0 + 5) == []  # heard something: no timeout failover
    decision = table.decide(txn.current.branch, 503, T0 + 6)
    assert decision is not None and decision.verdict is Verdict.FAILOVER


def test_last_candidate_failure_is_relayed() -> None:
    table = Table(10, 2.0)
    txn = _start(table, candidates=())
    decision = table.decide(txn.current.branch, 503, T0)
    assert decision is not None and decision.verdict is Verdict.RELAY
    assert txn.phase is Phase.COMPLETED


def test_timeout_fails_over_then_last_attempt_waits_for_timer_b() -> None:
    table = Table(10, 2.0)
    txn = _start(table, candidates=(U2,))
    assert table.due(T0 + 1.9) == []
    [decision] = table.due(T0 + 2.0)
    assert (decision.verdict, decision.reason) == (Verdict.FAILOVER, "timeout")
    second = _fail_over(table, decision, T0 + 2.0)
    assert second is not None
    assert table.due(T0 + 2.0 + TIMER_B - 0.1) == []
    [give_up] = table.due(T0 + 2.0 + TIMER_B)
    assert (give_up.verdict, give_up.reason) == (Verdict.ANSWER, "timeout")
    assert give_up.attempt is second
    assert txn.failed == [(U1, "timeout")]


def test_timeout_with_no_usable_candidate_waits_for_timer_b() -> None:
    table = Table(10, 2.0)
    txn = _start(table, candidates=(U2,))
    [decision] = table.due(T0 + 2.0)
    to = table.next_candidate(txn, lambda a: False)
    assert to is None
    table.exhausted(txn, decision, T0 + 2.0)
    [give_up] = table.due(T0 + TIMER_B)
    assert give_up.verdict is Verdict.ANSWER


def test_next_candidate_skips_members_that_went_down() -> None:
    table = Table(10, 2.0)
    txn = _start(table)
    assert table.next_candidate(txn, lambda a: a != U2) == U3
    assert txn.candidates == []


def test_responses_of_an_abandoned_branch() -> None:
    table = Table(10, 2.0)
    txn = _start(table)
    first = txn.current
    decision = table.decide(first.branch, 503, T0)
    assert decision is not None
    _fail_over(table, decision, T0)
    again = table.decide(first.branch, 503, T0 + 0.5)  # a retransmission of the 503
    assert again is not None and again.verdict is Verdict.ABSORB and again.ack
    ringing = table.decide(first.branch, 180, T0 + 0.5)
    assert ringing is not None and ringing.verdict is Verdict.ABSORB and not ringing.ack
    late_ok = table.decide(first.branch, 200, T0 + 0.6)
    assert late_ok is not None and late_ok.verdict is Verdict.RELAY  # RFC 3261 §16.7 step 5


def test_cancel_forbids_failover() -> None:
    table = Table(10, 2.0)
    txn = _start(table)
    table.cancel(txn)
    decision = table.decide(txn.current.branch, 503, T0)
    assert decision is not None and decision.verdict is Verdict.RELAY


def test_transport_failure() -> None:
    table = Table(10, 2.0)
    txn = _start(table, candidates=(U2,))
    decision = table.transport_failed(txn.current.branch, T0)
    assert decision is not None
    assert (decision.verdict, decision.reason) == (Verdict.FAILOVER, "transport_error")
    second = _fail_over(table, decision, T0)
    assert second is not None
    last = table.transport_failed(second.branch, T0)
    assert last is not None and last.verdict is Verdict.ANSWER
    assert table.transport_failed(b"unknown", T0) is None


def test_transport_failure_after_provisional_is_absorbed() -> None:
    table = Table(10, 2.0)
    txn = _start(table)
    table.decide(txn.current.branch, 180, T0)
    decision = table.transport_failed(txn.current.branch, T0)
    assert decision is not None and decision.verdict is Verdict.ABSORB


def test_entries_expire_by_rfc_3261_timers() -> None:
    table = Table(10, 2.0)
    completed = _start(table, key="done")
    table.decide(completed.current.branch, 200, T0)
    proceeding = _start(table, key="ringing")
    table.decide(proceeding.current.branch, 180, T0)
    non_invite = _start(table, invite=False, key="register")
    table.decide(non_invite.current.branch, 100, T0)
    assert len(table) == 3
    table.due(T0 + min(LINGER, TIMER_B) - 0.1)
    assert len(table) == 3
    table.due(T0 + max(LINGER, TIMER_B))  # Timer D-like linger; Timer F for the REGISTER
    assert table.find("done") is None and table.find("register") is None
    table.due(T0 + TIMER_C - 1)
    assert table.find("ringing") is proceeding
    # Timer C: the ringing branch is cancelled (RFC 3261 §16.8), then kept LINGER seconds for
    # the 487 and the client's ACK of our 408
    [cancel] = table.due(T0 + TIMER_C)
    assert cancel.verdict is Verdict.CANCEL and cancel.transaction is proceeding
    assert table.find("ringing") is proceeding
    table.due(T0 + TIMER_C + LINGER)
    assert len(table) == 0
    assert table.match(proceeding.current.branch) is None


def test_table_is_bounded_and_forgets_the_oldest() -> None:
    table = Table(3, 2.0)
    txns = [_start(table, key=f"k{i}") for i in range(5)]
    assert len(table) == 3
    assert table.find("k0") is None and table.match(txns[0].current.branch) is None
    assert table.decide(txns[0].current.branch, 503, T0) is None  # the stateless path's now
    assert table.find("k4") is txns[4]


def test_attempt_branches_are_distinct_and_keep_the_magic_cookie() -> None:
    branches = {attempt_branch(KEY, b"z9hG4bKsgfirst", n) for n in range(5)}
    assert len(branches) == 5
    assert all(b.startswith(b"z9hG4bKsg") for b in branches)
    assert attempt_branch(KEY, b"z9hG4bKsgfirst", 0) == b"z9hG4bKsgfirst"


EVENTS = st.lists(
    st.one_of(
        st.tuples(
            st.just("response"),
            st.integers(0, 3),
            st.sampled_from([100, 180, 183, 200, 404, 408, 486, 500, 503]),
        ),
        st.tuples(st.just("wait"), st.floats(0.0, 60.0), st.just(0)),
        st.tuples(st.just("transport"), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("cancel"), st.just(0), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(events=EVENTS, invite=st.booleans(), candidates=st.integers(0, 3))
def test_never_fails_over_once_committed(
    events: list[tuple[str, float, int]], invite: bool, candidates: int
) -> None:
    """Whatever happens: no failover after a 101-299 or final response was relayed from the
    current branch or the client cancelled; at most one attempt per candidate; nothing relayed
    from an abandoned branch but an INVITE's 2xx; the table ends empty once the timers ran."""
    table = Table(4, 2.0)
    txn = _start(table, invite=invite, candidates=(U2, U3, U1)[:candidates])
    now = T0
    committed = False
    for kind, value, status in events:
        if kind == "wait":
            now += value
            decisions = table.due(now)
        elif kind == "cancel":
            table.cancel(txn)
            committed = True
            continue
        else:
            index = min(int(value), len(txn.attempts) - 1)
            attempt = txn.attempts[index]
            current = attempt is txn.current
            if kind == "response":
                decision = table.decide(attempt.branch, status, now)
            else:
                decision = table.transport_failed(attempt.branch, now)
            if decision is None:
                continue  # forgotten: the stateless path takes over
            if decision.verdict is Verdict.RELAY and not current:
                assert invite and 200 <= status < 300
            if decision.verdict is Verdict.RELAY and current and status > 100:
                committed = True
            decisions = [decision]
        for decision in decisions:
            if decision.verdict is Verdict.FAILOVER:
                assert not committed
                _fail_over(table, decision, now)
    assert len(txn.attempts) <= 1 + candidates
    for step in range(1, 6):
        later = now + step * (TIMER_C + TIMER_B + LINGER)
        for decision in table.due(later):
            assert decision.verdict is not Verdict.FAILOVER or not committed
            if decision.verdict is Verdict.FAILOVER:
                _fail_over(table, decision, later)
    assert len(table) == 0


@settings(max_examples=50, deadline=None)
@given(keys=st.lists(st.integers(0, 50), max_size=200))
def test_table_size_never_exceeds_its_bound(keys: list[int]) -> None:
    table = Table(8, 2.0)
    for i, key in enumerate(keys):
        _start(table, key=str(key))
        table.due(T0 + i * 0.01)
        assert len(table) <= 8
        assert len(table._branches) <= 8 * 4


def test_timer_c_restarts_on_each_provisional_then_cancels() -> None:
    table = Table(10, 2.0, timer_c=10.0)
    txn = _start(table, candidates=())
    table.decide(txn.current.branch, 100, T0)  # Timer C runs from the first provisional
    table.decide(txn.current.branch, 180, T0 + 6)  # ...and restarts on a 101-199 (§16.7 step 2)
    assert table.due(T0 + 10) == []
    assert table.find("k") is txn
    [decision] = table.due(T0 + 16)
    assert decision.verdict is Verdict.CANCEL and decision.reason == "timeout"
    assert decision.attempt is txn.current and txn.answered
    # the client has our 408 now: a 487, the 200 to our CANCEL, a late 180 are LATE
    late = table.decide(txn.current.branch, 487, T0 + 16.1)
    assert late is not None and late.verdict is Verdict.LATE and late.ack
    ok = table.decide(txn.current.branch, 200, T0 + 16.1)
    assert ok is not None and ok.verdict is Verdict.LATE and not ok.ack
    ringing = table.decide(txn.current.branch, 180, T0 + 16.2)
    assert ringing is not None and ringing.verdict is Verdict.LATE and not ringing.ack


def test_non_invite_has_no_timer_c() -> None:
    table = Table(10, 2.0, timer_c=10.0)
    txn = _start(table, invite=False, candidates=())
    table.decide(txn.current.branch, 180, T0)
    assert table.due(T0 + TIMER_B) == []  # Timer F: forgotten, nothing sent
    assert table.find("k") is None


def test_first_response_wait_is_measured_and_taken_once() -> None:
    table = Table(10, 2.0)
    slow = _start(table, key="slow")
    fast = _start(table, key="fast")
    table.decide(fast.current.branch, 100, T0 + 0.2)
    table.decide(slow.current.branch, 180, T0 + 1.5)
    table.decide(slow.current.branch, 200, T0 + 9)  # not a first response
    assert table.take_waited() == 1.5
    assert table.take_waited() == 0.0


def test_failover_waits_longer_while_we_read_late() -> None:
    table = Table(10, 2.0)
    txn = _start(table)
    assert table.due(T0 + 2.0, lag=1.5) == []  # our own queue may hold its answer
    assert table.find("k") is txn and txn.current.to == U1
    assert table.due(T0 + 3.4, lag=1.5) == []
    [decision] = table.due(T0 + 3.5, lag=1.5)
    assert decision.verdict is Verdict.FAILOVER and decision.reason == "timeout"
    other = _start(table, key="other")
    end = T0 + 2.0 + MAX_LAG_PERIODS * 2.0
    assert table.due(end - 0.1, lag=60.0) == []  # MAX_LAG_PERIODS failover_timeouts at most
    [late] = table.due(end, lag=60.0)
    assert late.transaction is other and late.verdict is Verdict.FAILOVER
