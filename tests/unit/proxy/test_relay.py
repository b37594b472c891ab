"""Relaying a response through the core (RFC 3261 §16.7 step 3, §18.2.2; issue 13): a response
whose Via values come as one comma list (as SIPp and many UAs echo them) or as lines of their
own is checked by the value below ours alone and leaves with the bytes the header-line editor
(`Edits.remove_top_via`) writes; a forged top Via in a comma list is a stray. On the branch of a
client transaction the pool holds, our Via as we wrote it needs no MAC; changed, it does.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest import MonkeyPatch

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy import via
from sipguard.proxy.actions import Cause, Forward
from sipguard.proxy.core import Core
from sipguard.settings import Trunk
from sipguard.sip import Edits, Response, build_response, parse_message
from sipguard.sip.values import Via
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, UPSTREAM, core, forwarded, request
from tests.unit.proxy.playbook import settings as make_settings
from tests.unit.proxy.test_core_pool import pool_core
from tests.unit.proxy.test_core_routing import response_to

SEPARATORS = [", ", ",", " , ", "\t,\t"]
OTHERS = [
    "SIP/2.0/UDP 10.0.0.1:5061;branch=z9hG4bK-1;rport",
    'SIP/2.0/UDP 127.0.0.1:5061;branch=1;rport;x="a, b"',
    "SIP/2.0/TCP Client.Example.com:5061;branch=z9hG4bK-1;received=10.1.1.1;rport=5999",
]


def _relayed(proxy: Core, data: bytes) -> None:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    (action,) = proxy.handle(data, UPSTREAM, LOCAL, None, NOW)
    assert isinstance(action, Forward) and action.cause is Cause.RESPONSE
    assert action.to == CLIENT
    assert action.data == Edits(msg).remove_top_via().build()
    assert b"sgf=" not in action.data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["Via: ", "Via:", "Via:\t", "v: ", "VIA: "]),
    separator=st.sampled_from(SEPARATORS),
    others=st.lists(st.sampled_from(OTHERS), max_size=2),
    one_line=st.booleans(),
)
def test_any_via_layout_is_relayed_as_the_editor_writes(
    name: str, separator: str, others: list[str], one_line: bool
) -> None:
    """Ours on top, the client's below, more values after: on one line or on lines of their
    own, in any spelling (the general path for the compact and other-case names)."""
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    data = build_response(sent, 200, b"OK", to_tag=b"callee-1")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    vias = [line[5:] for line in lines if line.startswith(b"Via: ")]
    vias += [other.encode() for other in others]
    rest = [line for line in lines if not line.startswith(b"Via: ")]
    if one_line:
        via_lines = [name.encode() + separator.encode().join(vias)]
    else:
        via_lines = [name.encode() + value for value in vias]
    _relayed(proxy, b"\r\n".join([rest[0], *via_lines, *rest[1:]]) + b"\r\n\r\n" + body)


def _one_line(data: bytes) -> bytes:
    """The response with its Via lines joined into one comma list (as SIPp echoes them)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    vias = [line[5:] for line in lines if line.startswith(b"Via: ")]
    others = [line for line in lines if not line.startswith(b"Via: ")]
    joined = [others[0], b"Via: " + b", ".join(vias), *others[1:]]
    return b"\r\n".join(joined) + b"\r\n\r\n" + body


def test_response_with_a_comma_list_via_is_relayed_to_the_client() -> None:
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    for data in (build_response(sent, 200, b"OK", to_tag=b"callee-1"),):
        for shape in (data, _one_line(data)):
            msg = parse_message(shape)
            assert isinstance(msg, Response) and msg.matched_span("via") is not None
            _relayed(proxy, shape)


def test_comma_list_with_a_forged_top_via_is_stray() -> None:
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    data = _one_line(build_response(sent, 200, b"OK", to_tag=b"callee-1"))
    forged = data.replace(b"branch=z9hG4bKsg", b"branch=z9hG4bKsgf", 1)
    (action,) = proxy.handle(forged, UPSTREAM, LOCAL, None, NOW)
    assert action.cause is Cause.STRAY


def _filled(data: bytes) -> bytes:
    """The response as an upstream that fills our `rport` and adds `received` to our Via writes
    it (RFC 3581 §4, RFC 3261 §18.2.1): our Via is no longer the bytes we sent."""
    filled = data.replace(b";rport;sgf=", b";rport=5060;sgf=", 1)
    return filled.replace(b"-5061\r\n", b"-5061;received=10.9.9.9\r\n", 1)


def test_a_held_transactions_response_is_relayed_without_a_mac(monkeypatch: MonkeyPatch) -> None:
    """A response on the branch of a client transaction the pool holds, whose top Via is the
    one we wrote, is ours without the branch MAC recomputed; one whose Via an upstream changed
    is checked by the MAC, as a response no transaction knows."""
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    data = build_response(sent, 180, b"Ringing", to_tag=b"callee-1")

    def no_mac(*args: object) -> bytes:
        raise AssertionError("the branch MAC was recomputed")

    with monkeypatch.context() as patch:
        patch.setattr(via, "branch", no_mac)
        for shape in (data, _one_line(data)):
            _relayed(proxy, shape)
        with pytest.raises(AssertionError, match="MAC"):
            proxy.handle(_filled(data), UPSTREAM, LOCAL, None, NOW)
    for shape in (_filled(data), _one_line(_filled(data))):
        _relayed(proxy, shape)


def test_a_changed_via_on_a_held_branch_still_needs_its_mac() -> None:
    """SECURITY-CASES 34 on a held transaction's branch: our Via with another flow token, or
    another flow token in a Via an upstream filled in, is a stray."""
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    data = build_response(sent, 200, b"OK", to_tag=b"callee-1")
    for shape in (data, _filled(data)):
        redirected = shape.replace(b"sgf=udp-127.0.0.1-5061", b"sgf=udp-127.0.0.9-9")
        (action,) = proxy.handle(redirected, UPSTREAM, LOCAL, None, NOW)
        assert action.cause is Cause.STRAY
        moved = shape.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5060;", b"Via: SIP/2.0/UDP 10.0.0.1;")
        (action,) = proxy.handle(moved, UPSTREAM, LOCAL, None, NOW)
        assert isinstance(action, Forward) and action.to == CLIENT  # as before: the MAC decides


def test_is_sent_via_is_our_via_line_byte_for_byte() -> None:
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    action = proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0]
    assert isinstance(action, Forward)
    ours = forwarded(action).top_via
    assert via.is_sent_via(ours, action.data)
    for value in (ours.raw[:-1], ours.raw + b";x", ours.raw.replace(b";rport;", b";rport=1;")):
        assert not via.is_sent_via(Via(value), action.data)
    assert not via.is_sent_via(forwarded(action).vias[1], b"")


def test_a_later_attempts_changed_via_is_checked_against_the_first_branch() -> None:
    """After a failover the response comes on a branch of its own; when an upstream changed our
    Via, the MAC it is checked by is still the transaction's first (stateless) branch."""
    c = pool_core()
    first = c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0]
    assert isinstance(first, Forward)
    _ack, second = c.handle(
        response_to(first, 503, "Service Unavailable"), first.to, LOCAL, None, NOW
    )
    assert isinstance(second, Forward) and second.cause is Cause.FAILOVER
    for status in (180, 200):
        filled = _filled(response_to(second, status))
        (relayed,) = c.handle(filled, second.to, LOCAL, None, NOW)
        assert isinstance(relayed, Forward) and relayed.cause is Cause.RESPONSE
        assert relayed.to == CLIENT
