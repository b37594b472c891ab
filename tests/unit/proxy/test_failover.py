"""The core's upstream side (proxy.failover): choosing, failing over, probing, reporting, with
the core's callbacks played by small functions that record what they were asked."""

from __future__ import annotations

from dataclasses import replace

from sipguard.proxy.actions import Action, Address, Cause, Drop, Forward, Info, Reply, Transport
from sipguard.proxy.failover import Relay, Upstreams
from sipguard.proxy.pool import Health, HealthChange
from sipguard.proxy.probe import is_probe_branch
from sipguard.proxy.transactions import TIMER_B
from sipguard.proxy.upstream_report import FailoverEvent, Outcome
from sipguard.settings import Upstream, UpstreamHealth
from sipguard.sip import Request, Response, build_response, parse_message
from tests.unit.proxy.playbook import LOCAL, NOW, settings

U1 = Address(Transport.UDP, "127.0.0.1", 5070)
U2 = Address(Transport.UDP, "127.0.0.1", 5080)
KEY = b"k" * 32
CLIENT_REPLY = Address(Transport.UDP, "127.0.0.1", 5061)


def _upstream(a: Address, priority: int = 1) -> Upstream:
    return Upstream(f"sip:{a.host}:{a.port}", a.transport.value, a.host, a.port, priority)


def _invite(branch: bytes, call_id: str = "c1") -> bytes:
    return (
        b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=" + branch + b";rport\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-client\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=f1\r\n"
        b"To: <sip:bot@127.0.0.1>\r\n"
        b"Call-ID: " + call_id.encode() + b"\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Max-Forwards: 69\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


class Rig:
    def __init__(self, **health: float) -> None:
        s = settings()
        s = replace(
            s,
            upstream=(_upstream(U1), _upstream(U2)),
            upstream_health=UpstreamHealth(**health),  # type: ignore[arg-type]
        )
        self.resent: list[tuple[str, Address, bytes]] = []
        self.answered: list[tuple[str, int]] = []
        self.ups: Upstreams[str] = Upstreams(s, KEY, self.resend, self.answer, lambda a: LOCAL)

    def resend(self, context: str, to: Address, branch: bytes) -> Forward | None:
        self.resent.append((context, to, branch))
        info = Info("INVITE", "c1")
        return Forward(_invite(branch), to, LOCAL, None, Cause.ADMITTED_DIGEST, info)

    def answer(self, context: str, status: int) -> Action:
        self.answered.append((context, status))
        return Reply(
            b"SIP/2.0 %d X\r\n\r\n" % status, CLIENT_REPLY, LOCAL, None, Cause.UPSTREAM_ERROR
        )

    def start(self, key: str = "k1") -> bytes:
        ups = self.ups
        first, *others = ups.candidates(b"c1")
        branch = b"z9hG4bKsgfirst"
        forward = Forward(
            _invite(branch), first.address, LOCAL, None, Cause.ADMITTED_DIGEST, Info("INVITE")
        )
        ups.started(key, "ctx", forward, branch, others, NOW)
        return branch


def _response(branch: bytes, status: int, reason: bytes = b"X") -> Response:
    request = parse_message(_invite(branch))
    assert isinstance(request, Request)
    msg = parse_message(build_response(request, status, reason, to_tag=b"up"))
    assert isinstance(msg, Response)
    return msg


def test_503_fails_over_with_ack_and_reports() -> None:
    rig = Rig()
    branch = rig.start()
    first = rig.ups.current("k1")
    assert first is not None and first.branch == branch
    actions = rig.ups.on_response(_response(branch, 503), first.to, NOW + 0.1)
    assert isinstance(actions, list)
    ack, resent = actions
    assert isinstance(ack, Forward) and ack.data.startswith(b"ACK ") and ack.to == first.to
    assert isinstance(resent, Forward) and resent.cause is Cause.FAILOVER and resent.to != first.to
    [(context, to, new_branch)] = rig.resent
    assert (context, to) == ("ctx", resent.to) and new_branch != branch
    current = rig.ups.current("k1")
    assert current is not None and current.branch == new_branch
    assert rig.ups.on_response(_response(new_branch, 180), to, NOW + 0.2) is Relay.MATCHED
    report = rig.ups.report()
    [event] = report.events
    assert isinstance(event, FailoverEvent) and event.reason == "503"
    assert (event.call_id, event.method) == ("c1", "INVITE")
    uri = {U1: "sip:127.0.0.1:5070", U2: "sip:127.0.0.1:5080"}
    assert (event.from_uri, event.to_uri) == (uri[first.to], uri[to])
    assert report.counts == {
        (uri[first.to], Outcome.FORWARDED): 1,
        (uri[first.to], Outcome.FAILED_OVER): 1,
        (uri[to], Outcome.FORWARDED): 1,
    }
    assert rig.ups.report().counts == {}  # handed over once


def test_last_candidate_503_is_relayed() -> None:
    rig = Rig()
    branch = rig.start()
    first = rig.ups.current("k1")
    assert first is not None
    rig.ups.on_response(_response(branch, 503), first.to, NOW)
    second = rig.ups.current("k1")
    assert second is not None
    assert rig.ups.on_response(_response(second.branch, 503), second.to, NOW) is Relay.MATCHED


def test_unknown_branch_takes_the_stateless_path() -> None:
    rig = Rig()
    assert rig.ups.on_response(_response(b"z9hG4bKsgother", 200), U1, NOW) is Relay.UNKNOWN


def test_timeouts_fail_over_then_answer_408() -> None:
    rig = Rig(failover_timeout=2.0)
    rig.start()
    [resent] = [a for a in rig.ups.tick(NOW + 2.0) if a.cause is not Cause.PROBE]
    assert isinstance(resent, Forward) and resent.cause is Cause.FAILOVER
    actions = rig.ups.tick(NOW + 2.0 + TIMER_B)
    probes = [a for a in actions if a.cause is Cause.PROBE]
    answers = [a for a in actions if isinstance(a, Reply)]
    assert len(answers) == 1 and rig.answered == [("ctx", 408)]
    assert probes  # probing goes on meanwhile
    report = rig.ups.report()
    timeouts = {k: v for k, v in report.counts.items() if k[1] is Outcome.TIMEOUT}
    assert sum(timeouts.values()) == 2


def test_transport_failure_fails_over_then_answers_503() -> None:
    rig = Rig()
    branch = rig.start()
    first = rig.ups.current("k1")
    assert first is not None
    forward = Forward(_invite(branch), first.to, LOCAL, None, Cause.ADMITTED_DIGEST)
    actions = rig.ups.upstream_failed(forward, branch, NOW)
    assert actions is not None and [a.cause for a in actions] == [Cause.FAILOVER]
    second = rig.ups.current("k1")
    assert second is not None
    forward2 = Forward(_invite(second.branch), second.to, LOCAL, None, Cause.FAILOVER)
    actions = rig.ups.upstream_failed(forward2, second.branch, NOW)
    assert actions is not None and [type(a) for a in actions] == [Reply]
    assert rig.answered == [("ctx", 503)]
    assert rig.ups.upstream_failed(forward, b"z9hG4bKsgnone", NOW) is None


def test_cancel_stops_failover_and_names_the_current_branch() -> None:
    rig = Rig()
    branch = rig.start()
    first = rig.ups.cancelled("k1")
    assert first is not None and first.branch == branch
    assert rig.ups.on_response(_response(branch, 503), first.to, NOW) is Relay.MATCHED
    assert rig.ups.cancelled("unknown") is None


def test_probes_mark_down_and_up_and_report() -> None:
    rig = Rig(probe_interval=1.0, probe_timeout=0.5, down_after=1, up_after=1)
    probes = [a for a in rig.ups.tick(NOW) if a.cause is Cause.PROBE]
    assert len(probes) == 2
    for probe in probes:
        assert isinstance(probe, Forward)
        msg = parse_message(probe.data)
        assert isinstance(msg, Request) and is_probe_branch(msg.top_via.branch)
        status = 503 if probe.to == U1 else 200
        response = parse_message(build_response(msg, status, b"X", to_tag=b"t"))
        assert isinstance(response, Response)
        [drop] = rig.ups.on_response(response, probe.to, NOW + 0.1)  # type: ignore[misc]
        assert isinstance(drop, Drop) and drop.cause is Cause.PROBE
    assert [m.address for m in rig.ups.candidates(b"x")] == [U2]
    report = rig.ups.report()
    assert report.events == [HealthChange(rig.ups.pool.member(U1), Health.DOWN, "unavailable")]  # type: ignore[arg-type]
    assert report.health == [("sip:127.0.0.1:5070", False), ("sip:127.0.0.1:5080", True)]


def test_probe_answer_from_elsewhere_is_stray() -> None:
    rig = Rig(probe_interval=1.0)
    probe = next(a for a in rig.ups.tick(NOW) if isinstance(a, Forward))
    msg = parse_message(probe.data)
    assert isinstance(msg, Request)
    response = parse_message(build_response(msg, 503, b"X", to_tag=b"t"))
    assert isinstance(response, Response)
    elsewhere = Address(Transport.UDP, "127.0.0.9", 5070)
    [drop] = rig.ups.on_response(response, elsewhere, NOW)  # type: ignore[misc]
    assert isinstance(drop, Drop) and drop.cause is Cause.STRAY


def test_failover_skips_a_member_that_went_down() -> None:
    rig = Rig(probe_interval=1.0, probe_timeout=0.5, down_after=1, up_after=1)
    branch = rig.start()
    first = rig.ups.current("k1")
    assert first is not None
    other = U2 if first.to == U1 else U1
    for probe in rig.ups.tick(NOW):
        if isinstance(probe, Forward) and probe.to == other:
            sent = parse_message(probe.data)
            assert isinstance(sent, Request) and sent.top_via.branch is not None
            rig.ups.upstream_failed(probe, sent.top_via.branch, NOW)
    assert rig.ups.on_response(_response(branch, 503), first.to, NOW) is Relay.MATCHED
    assert rig.resent == []


def test_reconfigure_keeps_health_and_forgets_removed() -> None:
    rig = Rig(probe_interval=1.0, down_after=1)
    s = replace(settings(), upstream=(_upstream(U2),), upstream_health=UpstreamHealth(1.0))
    rig.ups.reconfigure(s)
    assert [m.address for m in rig.ups.candidates(b"x")] == [U2]
    assert rig.ups.report().health == [("sip:127.0.0.1:5080", True)]


def test_a_probe_answer_read_late_under_load_is_not_a_timeout() -> None:
    # sipguard saturated: the first response to a forwarded INVITE is read 1.5 s after the
    # INVITE left, and a probe's answer waits as long in the same socket buffer
    rig = Rig(probe_interval=5.0, probe_timeout=2.0, down_after=1, failover_timeout=4.0)
    probes = [a for a in rig.ups.tick(NOW) if isinstance(a, Forward)]
    branch = rig.start()
    first = rig.ups.current("k1")
    assert first is not None
    assert rig.ups.on_response(_response(branch, 180), first.to, NOW + 1.5) is Relay.MATCHED
    rig.ups.tick(NOW + 2.5)  # past the probes' deadline (NOW + 2) by less than the delay
    assert rig.ups.report().events == []
    assert [m.address for m in rig.ups.candidates(b"x")] != []
    assert {rig.ups.pool.health(p.to) for p in probes} == {Health.UP}
    # the delay is gone 1.5 s later (a queue drains in real time at most): a timeout again
    rig.ups.tick(NOW + 4.0)
    assert {e.health for e in rig.ups.report().events} == {Health.DOWN}  # type: ignore[union-attr]


def test_timer_c_cancels_the_ringing_branch_and_answers_408() -> None:
    rig = Rig(timer_c=10.0)
    branch = rig.start()
    ringing = rig.ups.current("k1")
    assert ringing is not None
    assert rig.ups.on_response(_response(branch, 180), ringing.to, NOW + 0.1) is Relay.MATCHED
    assert [a for a in rig.ups.tick(NOW + 10.0) if a.cause is not Cause.PROBE] == []
    cancel, answer = [a for a in rig.ups.tick(NOW + 10.2) if a.cause is not Cause.PROBE]
    assert isinstance(cancel, Forward) and cancel.to == ringing.to
    sent = parse_message(cancel.data)
    assert isinstance(sent, Request) and sent.method == b"CANCEL"
    assert sent.top_via.branch == branch  # RFC 3261 §9.1: the INVITE's branch
    assert isinstance(answer, Reply) and rig.answered == [("ctx", 408)]
    # the upstream answers the CANCEL 200 and the INVITE 487: neither reaches the client
    ok = parse_message(build_response(sent, 200, b"OK", to_tag=b"up"))
    assert isinstance(ok, Response)
    [drop] = rig.ups.on_response(ok, ringing.to, NOW + 10.3)  # type: ignore[misc]
    assert isinstance(drop, Drop) and drop.cause is Cause.FAILOVER
    actions = rig.ups.on_response(_response(branch, 487), ringing.to, NOW + 10.3)
    assert isinstance(actions, list)
    ack, dropped = actions
    assert isinstance(ack, Forward) and ack.data.startswith(b"ACK ") and ack.to == ringing.to
    assert isinstance(dropped, Drop)
    # a 2xx that crossed our CANCEL still goes on (§16.7 step 5)
    assert rig.ups.on_response(_response(branch, 200), ringing.to, NOW + 10.4) is Relay.MATCHED
    report = rig.ups.report()
    assert (
        report.counts[("sip:127.0.0.1:5070", Outcome.TIMEOUT)]
        + report.counts.get(("sip:127.0.0.1:5080", Outcome.TIMEOUT), 0)
        == 1
    )
