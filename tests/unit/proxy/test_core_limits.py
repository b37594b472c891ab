"""Playbook tests of per-trunk limits in the core (issue 17): these bytes from this peer at this
time -> a Forward, or a 503 naming the limit; calls counted from the INVITE, ended by the
upstream's answers, BYE from either side, CANCEL, an undeliverable INVITE or the clock."""

from __future__ import annotations

from sipguard.policy.limits import LimitVerdict
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Action, Cause, Forward, Reply
from sipguard.proxy.core import Core
from sipguard.settings import Trunk, TrunkLimits
from sipguard.sip import Response, parse_message
from tests.unit.proxy.playbook import (
    CLIENT,
    LOCAL,
    NOW,
    STRANGER,
    UPSTREAM,
    answer,
    challenge,
    core,
    digest_trunk,
    forwarded,
    only,
    request,
    settings,
    status_of,
    with_auth,
)
from tests.unit.proxy.test_core_routing import response_to


def limited(**limits: float | int) -> Core:
    trunk = Trunk("office", whitelist=parse_rules(("127.0.0.1",)), limits=TrunkLimits(**limits))  # type: ignore[arg-type]
    return core(settings(trunk))


def invite(c: Core, n: int, now: float = NOW, branch: str | None = None) -> Action:
    data = request("INVITE", call_id=f"call-{n}@client", branch=branch or f"z9hG4bK-c{n}")
    return only(c.handle(data, CLIENT, LOCAL, None, now))


def response(action: Action) -> Response:
    assert isinstance(action, Reply), action
    msg = parse_message(action.data)
    assert isinstance(msg, Response)
    return msg


def test_calls_per_second_503_with_retry_after() -> None:
    c = limited(calls_per_second=1)  # burst 2
    assert isinstance(invite(c, 1), Forward)
    assert isinstance(invite(c, 2), Forward)
    refused = invite(c, 3)
    msg = response(refused)
    assert (msg.status, msg.reason) == (503, b"Call Rate Limit Exceeded")
    assert msg.get(b"retry-after") == b"1"
    assert refused.cause is Cause.TRUNK_LIMITED
    assert (refused.info.trunk, refused.info.detail) == ("office", "calls_per_second")
    assert isinstance(invite(c, 4, NOW + 1.0), Forward)  # a token is back
    # A retransmission of an admitted INVITE is forwarded again, whatever the bucket holds.
    assert isinstance(invite(c, 1, NOW + 1.0), Forward)


def test_registrations_per_second() -> None:
    c = limited(registrations_per_second=1)
    for n in range(2):
        data = request("REGISTER", call_id=f"reg-{n}", branch=f"z9hG4bK-r{n}")
        assert isinstance(only(c.handle(data, CLIENT, LOCAL, None, NOW)), Forward)
    refused = only(c.handle(request("REGISTER", call_id="reg-9"), CLIENT, LOCAL, None, NOW))
    msg = response(refused)
    assert (msg.status, msg.reason) == (503, b"Registration Rate Limit Exceeded")
    assert msg.get(b"retry-after") == b"1"
    # OPTIONS, MESSAGE... are not limited.
    message = request("MESSAGE", call_id="m-1", branch="z9hG4bK-m1")
    assert isinstance(only(c.handle(message, CLIENT, LOCAL, None, NOW)), Forward)


def test_concurrent_calls_released_by_failure_bye_cancel() -> None:
    c = limited(concurrent_calls=1)
    first = invite(c, 1)
    assert isinstance(first, Forward)
    over = response(invite(c, 2))
    assert (over.status, over.reason, over.get(b"retry-after")) == (
        503,
        b"Concurrent Call Limit Reached",
        None,
    )
    # The upstream refuses the first call (486): the slot is free.
    only(c.handle(response_to(first, 486, "Busy Here"), UPSTREAM, LOCAL, None, NOW))
    second = invite(c, 2)
    assert isinstance(second, Forward)
    # Answered, then the caller hangs up: free again.
    only(c.handle(response_to(second, 200, "OK", to_tag="up-2"), UPSTREAM, LOCAL, None, NOW))
    assert c.trunk_usage("office").active == 1  # type: ignore[union-attr]
    bye = request("BYE", call_id="call-2@client", to_tag="up-2", cseq=2, branch="z9hG4bK-b2")
    assert isinstance(c.handle(bye, CLIENT, LOCAL, None, NOW)[0], Forward)
    assert c.trunk_usage("office").active == 0  # type: ignore[union-attr]
    # A CANCEL of a call being set up frees it too.
    third = invite(c, 3)
    assert isinstance(third, Forward)
    cancel = request("CANCEL", call_id="call-3@client", branch="z9hG4bK-c3")
    c.handle(cancel, CLIENT, LOCAL, None, NOW)
    assert c.calls_active() == {"office": 0}


def test_bye_from_the_upstream_releases() -> None:
    c = limited(concurrent_calls=1)
    first = invite(c, 1)
    assert isinstance(first, Forward)
    only(c.handle(response_to(first, 200, "OK", to_tag="up-1"), UPSTREAM, LOCAL, None, NOW))
    out = forwarded(first)
    route = out.get_all(b"record-route")[0]
    bye = (
        b"BYE sip:alice@127.0.0.1:5061 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-up-bye\r\n"
        b"Route: " + route + b"\r\n"
        b"From: <sip:bot@127.0.0.1>;tag=up-1\r\n"
        b"To: <sip:alice@127.0.0.1>;tag=from-1\r\n"
        b"Call-ID: call-1@client\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(c.handle(bye, UPSTREAM, LOCAL, None, NOW)[0], Forward)
    assert c.calls_active() == {"office": 0}


def test_forged_failure_from_the_client_frees_nothing() -> None:
    """A PBX that answers its own INVITE with a 486 (sent to sipguard) to free its slot."""
    c = limited(concurrent_calls=1)
    first = invite(c, 1)
    assert isinstance(first, Forward)
    c.handle(response_to(first, 486, "Busy Here"), CLIENT, LOCAL, None, NOW)
    c.handle(response_to(first, 486, "Busy Here"), STRANGER, LOCAL, None, NOW)
    assert c.calls_active() == {"office": 1}
    assert response(invite(c, 2)).status == 503


def test_undeliverable_invite_frees_its_slot() -> None:
    c = limited(concurrent_calls=1)
    first = invite(c, 1)
    assert isinstance(first, Forward)
    c.upstream_failed(first, NOW)
    assert c.calls_active() == {"office": 0}


def test_lost_bye_released_by_tick() -> None:
    c = limited(concurrent_calls=1, max_call_duration=10)
    first = invite(c, 1)
    assert isinstance(first, Forward)
    only(c.handle(response_to(first, 200, "OK", to_tag="up-1"), UPSTREAM, LOCAL, None, NOW))
    c.tick(NOW + 9.9)
    assert c.calls_active() == {"office": 1}
    c.tick(NOW + 10.0)
    assert c.calls_active() == {"office": 0}
    assert isinstance(invite(c, 2, NOW + 10.0), Forward)


def test_digest_trunk_limited_after_authentication() -> None:
    trunk = digest_trunk(limits=TrunkLimits(concurrent_calls=0))
    c = core(settings(trunk))
    first = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert status_of(first) == 407  # the challenge comes first: nobody is limited unknown
    value = answer(challenge(first), "INVITE")
    second = request("INVITE", cseq=2, branch="z9hG4bK-client-2")
    refused = only(
        c.handle(with_auth(second, "Proxy-Authorization", value), CLIENT, LOCAL, None, NOW)
    )
    assert (status_of(refused), refused.info.user) == (503, "alice")
    usage = c.trunk_usage("acme")
    assert usage is not None and usage.refused[LimitVerdict.CONCURRENT_CALLS] == 1


def test_reload_keeps_calls_counted() -> None:
    c = limited(concurrent_calls=2)
    assert isinstance(invite(c, 1), Forward)
    trunk = Trunk(
        "office", whitelist=parse_rules(("127.0.0.1",)), limits=TrunkLimits(concurrent_calls=1)
    )
    c.reconfigure(settings(trunk))
    assert c.calls_active() == {"office": 1}
    assert response(invite(c, 2)).status == 503
