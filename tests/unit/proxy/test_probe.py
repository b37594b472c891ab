"""Health probes: the OPTIONS we send, how answers count, what is in flight (proxy.probe,
proxy.originate)."""

from __future__ import annotations

from sipguard.proxy.actions import Address, Transport
from sipguard.proxy.originate import build_ack, build_cancel, build_probe
from sipguard.proxy.pool import MAX_LAG_PERIODS, Health, HealthPolicy, Member, Pool
from sipguard.proxy.probe import ProbeOutcome, Prober, classify, is_probe_branch
from sipguard.sip import Request, Response, build_response, parse_message

A = Member("sip:127.0.0.1:5070", Address(Transport.UDP, "127.0.0.1", 5070))
B = Member("sip:[::1]:5080;transport=tcp", Address(Transport.TCP, "::1", 5080))
LOCAL4 = Address(Transport.UDP, "127.0.0.1", 5060)
LOCAL6 = Address(Transport.TCP, "::1", 5060)
LOCALS = {A.address: LOCAL4, B.address: LOCAL6}
KEY = b"k" * 32


def _pool(down_after: int = 2, up_after: int = 2) -> Pool:
    return Pool([A, B], HealthPolicy(down_after, up_after))


def test_classify() -> None:
    assert classify(100) is None
    assert classify(183) is None
    assert classify(200) is ProbeOutcome.ANSWERED
    assert classify(404) is ProbeOutcome.ANSWERED  # alive, just no such user
    assert classify(405) is ProbeOutcome.ANSWERED
    assert classify(408) is ProbeOutcome.REFUSED
    assert classify(503) is ProbeOutcome.REFUSED
    assert classify(500) is ProbeOutcome.ANSWERED


def test_probe_request_parses_and_names_the_upstream() -> None:
    data = build_probe(B.address, LOCAL6, b"z9hG4bKsgp0123456789abcdef0123", 7)
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.method == b"OPTIONS"
    assert msg.uri == b"sip:[::1]:5080;transport=tcp"
    assert msg.top_via.branch == b"z9hG4bKsgp0123456789abcdef0123"
    assert msg.top_via.sent_by == b"[::1]:5060"
    assert msg.cseq.number == 7 and msg.cseq.method == b"OPTIONS"
    assert msg.max_forwards == 70
    assert len(msg.vias) == 1


def test_due_sends_one_probe_per_member_and_waits_for_the_interval() -> None:
    pool = _pool()
    prober = Prober(KEY, interval=5, timeout=2)
    probes = prober.due(pool, LOCALS, 100.0)
    assert [p.member for p in probes] == [A, B]
    assert all(is_probe_branch(p.branch) for p in probes)
    assert len({p.branch for p in probes}) == 2
    assert prober.due(pool, LOCALS, 101.0) == []  # in flight, and not due
    for p in probes:
        prober.answered(pool, p.branch, p.member.address, 200)
    assert prober.due(pool, LOCALS, 104.9) == []
    assert len(prober.due(pool, LOCALS, 105.0)) == 2


def test_disabled_probing_sends_nothing() -> None:
    assert Prober(KEY, interval=0, timeout=2).due(_pool(), LOCALS, 100.0) == []


def test_member_without_listener_is_not_probed() -> None:
    probes = Prober(KEY, 5, 2).due(_pool(), {A.address: LOCAL4}, 100.0)
    assert [p.member for p in probes] == [A]


def test_timeouts_mark_down_after_down_after_and_come_back() -> None:
    pool = _pool(down_after=2, up_after=2)
    prober = Prober(KEY, interval=1, timeout=0.5)
    now = 100.0
    changes = []
    for _ in range(2):
        prober.due(pool, LOCALS, now)
        changes += prober.expire(pool, now + 0.5)
        now += 1
    assert {(c.member, c.health, c.reason) for c in changes} == {
        (A, Health.DOWN, "timeout"),
        (B, Health.DOWN, "timeout"),
    }
    # a down member keeps being probed
    ups = []
    for _ in range(2):
        for p in prober.due(pool, LOCALS, now):
            matched, change = prober.answered(pool, p.branch, p.member.address, 404)
            assert matched
            if change is not None:
                ups.append(change)
        now += 1
    assert {(c.member, c.health, c.reason) for c in ups} == {
        (A, Health.UP, "answered"),
        (B, Health.UP, "answered"),
    }


def test_our_own_queueing_delay_pushes_the_deadline_back() -> None:
    # a saturated sipguard reads the answer seconds after it came: that is not the upstream's
    pool = _pool(down_after=1)
    prober = Prober(KEY, interval=5, timeout=2)
    [probe, _] = prober.due(pool, LOCALS, 100.0)
    assert prober.expire(pool, 103.0, lag=1.5) == []  # deadline 102, but we read 1.5 s late
    assert prober.answered(pool, probe.branch, A.address, 200, 103.2)[0]
    assert pool.health(A.address) is Health.UP
    # without the delay, the other probe of the same age timed out
    [change] = prober.expire(pool, 103.0)
    assert (change.member, change.health, change.reason) == (B, Health.DOWN, "timeout")


def test_queueing_delay_stretches_a_deadline_by_max_lag_periods_at_most() -> None:
    pool = _pool(down_after=1)
    prober = Prober(KEY, interval=5, timeout=2)
    prober.due(pool, LOCALS, 100.0)
    end = 102.0 + MAX_LAG_PERIODS * 2
    assert len(prober.expire(pool, end - 0.1, lag=60.0)) == 0
    assert len(prober.expire(pool, end, lag=60.0)) == 2  # a dead upstream is still found


def test_503_answer_counts_as_failure() -> None:
    pool = _pool(down_after=1)
    prober = Prober(KEY, 5, 2)
    probe = prober.due(pool, LOCALS, 100.0)[0]
    matched, change = prober.answered(pool, probe.branch, A.address, 503)
    assert matched and change is not None
    assert (change.health, change.reason) == (Health.DOWN, "unavailable")


def test_provisional_answer_keeps_the_probe_in_flight() -> None:
    pool = _pool(down_after=1)
    prober = Prober(KEY, 5, 2)
    probe = prober.due(pool, LOCALS, 100.0)[0]
    assert prober.answered(pool, probe.branch, A.address, 100) == (True, None)
    assert prober.in_flight == 2
    changes = prober.expire(pool, 102.0)
    assert {c.member for c in changes} == {A, B}


def test_answer_from_another_address_or_unknown_branch_is_ignored() -> None:
    pool = _pool(down_after=1)
    prober = Prober(KEY, 5, 2)
    probe = prober.due(pool, LOCALS, 100.0)[0]
    assert prober.answered(pool, probe.branch, B.address, 503) == (False, None)
    assert prober.answered(pool, b"z9hG4bKsgpforged", A.address, 503) == (False, None)
    assert pool.health(A.address) is Health.UP


def test_transport_failure_counts_at_once() -> None:
    pool = _pool(down_after=1)
    prober = Prober(KEY, 5, 2)
    probe = prober.due(pool, LOCALS, 100.0)[0]
    change = prober.failed(pool, probe.branch)
    assert change is not None and change.reason == "transport_error"
    assert prober.failed(pool, probe.branch) is None


def test_forget_removed_members() -> None:
    pool = _pool()
    prober = Prober(KEY, 5, 2)
    prober.due(pool, LOCALS, 100.0)
    pool.reconfigure([A], HealthPolicy())
    prober.forget_removed(pool)
    assert prober.in_flight == 1


def test_probe_branches_differ_between_keys() -> None:
    one = Prober(KEY, 5, 2).due(_pool(), LOCALS, 100.0)[0].branch
    two = Prober(b"x" * 32, 5, 2).due(_pool(), LOCALS, 100.0)[0].branch
    assert one != two


# An INVITE as sipguard forwarded it (our Via on top), for the ACK and CANCEL it owes.
FORWARDED_INVITE = (
    b"INVITE sip:bot@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsgabc;rport\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-client\r\n"
    b"Route: <sip:10.0.0.1;lr>\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=f1\r\n"
    b"To: <sip:bot@127.0.0.1>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 4 INVITE\r\n"
    b"Max-Forwards: 69\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_ack_for_a_failed_invite_branch() -> None:
    invite = parse_message(FORWARDED_INVITE)
    assert isinstance(invite, Request)
    response = parse_message(build_response(invite, 503, b"Service Unavailable", to_tag=b"up1"))
    assert isinstance(response, Response)
    ack = parse_message(build_ack(invite, response))
    assert isinstance(ack, Request)
    assert ack.method == b"ACK" and ack.uri == b"sip:bot@127.0.0.1:5070"
    assert [v.branch for v in ack.vias] == [b"z9hG4bKsgabc"]
    assert ack.to.tag == b"up1" and ack.from_.tag == b"f1"
    assert ack.cseq.number == 4 and ack.cseq.method == b"ACK"
    assert ack.get_all(b"route") == [b"<sip:10.0.0.1;lr>"]
    assert ack.call_id == b"c1"


def test_cancel_of_a_ringing_invite_branch() -> None:
    invite = parse_message(FORWARDED_INVITE)
    assert isinstance(invite, Request)
    cancel = parse_message(build_cancel(invite))
    assert isinstance(cancel, Request)  # RFC 3261 §9.1: what it copies from the INVITE
    assert cancel.method == b"CANCEL" and cancel.uri == b"sip:bot@127.0.0.1:5070"
    assert [v.branch for v in cancel.vias] == [b"z9hG4bKsgabc"]
    assert cancel.to.tag is None and cancel.from_.tag == b"f1"
    assert cancel.cseq.number == 4 and cancel.cseq.method == b"CANCEL"
    assert cancel.get_all(b"route") == [b"<sip:10.0.0.1;lr>"]
    assert cancel.call_id == b"c1"
