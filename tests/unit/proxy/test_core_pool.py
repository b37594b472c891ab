"""Playbook tests of the core with an upstream pool (issue 14): these bytes from this peer at
this time -> these actions. Failover on 503 and on timeout, no failover after 180, CANCEL and
retransmissions on the current branch, 503 with Retry-After when none is up, probes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Address, Cause, Drop, Forward, Reply, Transport
from sipguard.proxy.core import Core
from sipguard.proxy.pool import Health, HealthChange
from sipguard.proxy.upstream_report import FailoverEvent, UpstreamReport
from sipguard.settings import Trunk, Upstream, UpstreamHealth
from sipguard.sip import Request, Response, parse_message
from tests.unit.proxy.playbook import (
    CLIENT,
    LOCAL,
    NOW,
    core,
    forwarded,
    only,
    request,
    settings,
    status_of,
)
from tests.unit.proxy.test_core_routing import response_to

U1 = Address(Transport.UDP, "127.0.0.1", 5070)
U2 = Address(Transport.UDP, "127.0.0.1", 5080)
IP_TRUNK = Trunk("office", whitelist=parse_rules(("127.0.0.1",)))


def _uri(a: Address) -> str:
    return f"sip:{a.host}:{a.port}"


def pool_core(**health: float) -> Core:
    health.setdefault("probe_interval", 0.0)  # probes only where a test asks for them
    s = dataclasses.replace(
        settings(IP_TRUNK),
        upstream=tuple(Upstream(_uri(a), "udp", a.host, a.port) for a in (U1, U2)),
        upstream_health=UpstreamHealth(**health),  # type: ignore[arg-type]
    )
    return core(s)


def _other(a: Address) -> Address:
    return U2 if a == U1 else U1


def _invite(c: Core, now: float = NOW) -> Forward:
    action = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, now))
    assert isinstance(action, Forward) and action.to in (U1, U2)
    return action


def _reports(events: Sequence[object]) -> list[UpstreamReport]:
    return [e for e in events if isinstance(e, UpstreamReport)]


def test_503_fails_over_acks_the_failed_branch_and_relays_the_other() -> None:
    c = pool_core()
    first = _invite(c)
    ack, second = c.handle(
        response_to(first, 503, "Service Unavailable"), first.to, LOCAL, None, NOW
    )
    assert isinstance(ack, Forward) and ack.to == first.to
    sent_ack = forwarded(ack)
    assert sent_ack.method == b"ACK"
    assert sent_ack.top_via.branch == forwarded(first).top_via.branch
    assert isinstance(second, Forward) and second.to == _other(first.to)
    assert second.cause is Cause.FAILOVER
    assert forwarded(second).top_via.branch != forwarded(first).top_via.branch
    ringing = only(c.handle(response_to(second, 180, "Ringing"), second.to, LOCAL, None, NOW))
    assert isinstance(ringing, Forward) and ringing.to == CLIENT
    relayed = parse_message(ringing.data)
    assert isinstance(relayed, Response) and relayed.status == 180 and len(relayed.vias) == 1
    ok = only(c.handle(response_to(second, 200), second.to, LOCAL, None, NOW))
    assert isinstance(ok, Forward) and ok.to == CLIENT
    [report] = _reports(c.tick(NOW + 0.1))
    [event] = report.events
    assert isinstance(event, FailoverEvent)
    assert (event.from_uri, event.to_uri, event.reason) == (_uri(first.to), _uri(second.to), "503")


def test_retransmission_cancel_and_ack_go_to_the_current_branch() -> None:
    c = pool_core()
    first = _invite(c)
    _ack, second = c.handle(
        response_to(first, 503, "Service Unavailable"), first.to, LOCAL, None, NOW
    )
    assert isinstance(second, Forward)
    again = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW + 0.5))
    assert isinstance(again, Forward) and again.to == second.to
    assert forwarded(again).top_via.branch == forwarded(second).top_via.branch
    c.handle(response_to(second, 180, "Ringing"), second.to, LOCAL, None, NOW + 0.6)
    ok, cancel = c.handle(request("CANCEL"), CLIENT, LOCAL, None, NOW + 1)
    assert status_of(ok) == 200
    assert isinstance(cancel, Forward) and cancel.to == second.to
    assert forwarded(cancel).top_via.branch == forwarded(second).top_via.branch
    terminated = only(
        c.handle(response_to(second, 487, "Request Terminated"), second.to, LOCAL, None, NOW + 1)
    )
    assert isinstance(terminated, Forward) and terminated.to == CLIENT
    ack = only(c.handle(request("ACK", to_tag="up-1"), CLIENT, LOCAL, None, NOW + 1.1))
    assert isinstance(ack, Forward) and ack.to == second.to
    assert forwarded(ack).top_via.branch == forwarded(second).top_via.branch


def test_no_failover_once_a_provisional_was_relayed() -> None:
    c = pool_core()
    first = _invite(c)
    ringing = only(c.handle(response_to(first, 180, "Ringing"), first.to, LOCAL, None, NOW))
    assert isinstance(ringing, Forward) and ringing.to == CLIENT
    final = only(
        c.handle(response_to(first, 503, "Service Unavailable"), first.to, LOCAL, None, NOW)
    )
    assert isinstance(final, Forward) and final.to == CLIENT
    assert status_of_response(final) == 503
    assert not [a for a in c.tick(NOW + 10) if isinstance(a, Forward)]


def status_of_response(action: Forward) -> int:
    msg = parse_message(action.data)
    assert isinstance(msg, Response)
    return msg.status


def test_cancel_forbids_a_later_failover() -> None:
    c = pool_core()
    first = _invite(c)
    c.handle(request("CANCEL"), CLIENT, LOCAL, None, NOW + 0.1)
    final = only(
        c.handle(response_to(first, 503, "Service Unavailable"), first.to, LOCAL, None, NOW)
    )
    assert isinstance(final, Forward) and final.to == CLIENT


def test_timeout_fails_over_on_tick() -> None:
    c = pool_core(failover_timeout=2.0)
    first = _invite(c)
    assert not [a for a in c.tick(NOW + 1.9) if isinstance(a, Forward)]
    [second] = [a for a in c.tick(NOW + 2.0) if isinstance(a, Forward)]
    assert second.to == _other(first.to) and second.cause is Cause.FAILOVER
    # a late answer of the abandoned branch is absorbed (and its INVITE acknowledged)
    late = c.handle(response_to(first, 486, "Busy Here"), first.to, LOCAL, None, NOW + 3)
    assert [type(a) for a in late] == [Forward, Drop]
    assert forwarded(late[0]).method == b"ACK"


def test_none_up_gives_503_with_retry_after_and_forwards_nothing() -> None:
    c = pool_core(probe_interval=1.0, probe_timeout=0.5, down_after=1, up_after=1)
    probes = [a for a in c.tick(NOW) if isinstance(a, Forward)]
    assert sorted((p.to.port, p.cause) for p in probes) == [
        (5070, Cause.PROBE),
        (5080, Cause.PROBE),
    ]
    events = c.tick(NOW + 0.5)  # both probes time out
    [report] = _reports(events)
    assert {(e.member.address, e.health) for e in report.events if isinstance(e, HealthChange)} == {
        (U1, Health.DOWN),
        (U2, Health.DOWN),
    }
    answer = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW + 0.6))
    assert isinstance(answer, Reply) and status_of(answer) == 503
    msg = parse_message(answer.data)
    assert isinstance(msg, Response) and msg.get(b"retry-after")
    assert answer.cause is Cause.UPSTREAM_ERROR


def test_probe_answer_is_consumed_and_brings_an_upstream_back() -> None:
    c = pool_core(probe_interval=1.0, probe_timeout=0.5, down_after=1, up_after=1)
    c.tick(NOW)
    c.tick(NOW + 0.5)  # both down
    for probe in [a for a in c.tick(NOW + 1.0) if isinstance(a, Forward)]:
        req = forwarded(probe)
        assert isinstance(req, Request) and req.method == b"OPTIONS"
        drop = only(c.handle(response_to(probe, 200), probe.to, LOCAL, None, NOW + 1.1))
        assert isinstance(drop, Drop) and drop.cause is Cause.PROBE
    [report] = _reports(c.tick(NOW + 1.2))
    assert sorted(report.health) == [(_uri(U1), True), (_uri(U2), True)]
    assert isinstance(_invite(c, NOW + 1.3), Forward)


def test_same_call_id_same_upstream_across_restarts() -> None:
    one = _invite(pool_core())
    two = _invite(pool_core())
    assert one.to == two.to


def test_in_dialog_request_goes_where_its_route_or_uri_points() -> None:
    c = pool_core()
    inv = _invite(c)
    c.handle(response_to(inv, 200, "OK"), inv.to, LOCAL, None, NOW)
    sent = parse_message(inv.data)
    assert isinstance(sent, Request)
    ours = [f"Route: {v.decode()}" for v in sent.get_all(b"record-route")]  # as written
    assert ours
    chosen, other = inv.to, _other(inv.to)

    def bye(uri: str, extra: list[str], n: int) -> Address:
        msg = request(
            "BYE", uri=uri, to_tag="up-1", cseq=1 + n, branch=f"z9hG4bK-bye-{n}", extra=extra
        )
        action = only(c.handle(msg, CLIENT, LOCAL, None, NOW))
        assert isinstance(action, Forward), action
        return action.to

    # past our own Route, the Request-URI names the upstream that holds the dialog
    assert bye(f"sip:up@{other.host}:{other.port}", ours, 1) == other
    # a Route after ours names the next hop before the Request-URI does (RFC 3261 §16.4)
    then = f"Route: <sip:{chosen.host}:{chosen.port};lr>"
    assert bye(f"sip:up@{other.host}:{other.port}", [*ours, then], 2) == chosen
    # a next hop that is no upstream: the Call-ID's choice
    assert bye("sip:bot@198.51.100.7", ours, 3) == chosen


def test_probes_and_failover_leave_from_the_upstream_facing_socket() -> None:
    """What the pool sends itself (an OPTIONS probe, a failover's new branch) leaves from the
    shell's upstream-facing socket, as a first forward does, also once that socket moved (a
    reload that changed `upstream_source_port`): never from a listener, whose answers another
    worker might receive, nor from a socket closed since."""
    c = pool_core(probe_interval=1.0, probe_timeout=0.5)
    for port in (5090, 5091):
        own = Address(Transport.UDP, "127.0.0.1", port)
        c.use_upstream_sockets([own])
        probes = [a for a in c.tick(NOW + port) if isinstance(a, Forward)]
        assert len(probes) == 2 and {p.local for p in probes} == {own}
        assert {forwarded(p).top_via.port for p in probes} == {port}
    first = _invite(c, NOW + 6000)
    assert first.local == own
    _, second = c.handle(
        response_to(first, 503, "Service Unavailable"), first.to, LOCAL, None, NOW + 6000
    )
    assert isinstance(second, Forward) and second.cause is Cause.FAILOVER
    assert second.local == own and forwarded(second).top_via.port == 5091
