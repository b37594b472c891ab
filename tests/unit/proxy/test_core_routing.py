"""Playbook tests of forwarding (RFC 3261 §16, issue 5 item 3): what the core sends where."""

from __future__ import annotations

import dataclasses

import pytest

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Address, Cause, Drop, Forward, Reply, Transport
from sipguard.proxy.core import Core
from sipguard.proxy.memory import DIALOG_LINGER
from sipguard.settings import Credential, Trunk
from sipguard.sip import Response, parse_message
from tests.unit.proxy.playbook import (
    CLIENT,
    LOCAL,
    NOW,
    STRANGER,
    UPSTREAM,
    core,
    forwarded,
    only,
    request,
    settings,
    status_of,
)

IP_TRUNK = Trunk("office", whitelist=parse_rules(("127.0.0.1",)))


def response_to(fwd: Forward, status: int = 200, reason: str = "OK", to_tag: str = "up-1") -> bytes:
    """What the upstream answers to a request we forwarded."""
    req = forwarded(fwd)
    vias = b"".join(b"Via: " + v + b"\r\n" for v in req.get_all(b"via"))
    rr = b"".join(b"Record-Route: " + v + b"\r\n" for v in req.get_all(b"record-route"))
    return (
        b"SIP/2.0 %d %s\r\n" % (status, reason.encode())
        + vias
        + rr
        + b"From: "
        + (req.get(b"from") or b"")
        + b"\r\nTo: "
        + (req.get(b"to") or b"")
        + b";tag="
        + to_tag.encode()
        + b"\r\nCall-ID: "
        + req.call_id
        + b"\r\nCSeq: %d %s\r\nContact: <sip:bot@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
        % (req.cseq.number, req.cseq.method)
    )


def invite_through() -> tuple[Core, Forward]:
    c = core(settings(IP_TRUNK))
    action = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Forward)
    return c, action


def test_forwarded_request_edits() -> None:
    _c, action = invite_through()
    out = forwarded(action)
    vias = out.vias
    assert len(vias) == 2
    assert vias[0].host == b"127.0.0.1" and vias[0].port == 5060
    assert vias[0].branch is not None and vias[0].branch.startswith(b"z9hG4bKsg")
    assert vias[1].received == b"127.0.0.1"  # RFC 3581: rport was asked for
    assert vias[1].rport == 5061
    assert out.max_forwards == 69
    rr = out.get_all(b"record-route")
    assert len(rr) == 1 and b";lr" in rr[0] and b"127.0.0.1:5060" in rr[0]
    assert out.body == b""


def test_branch_is_deterministic_for_retransmissions() -> None:
    c, first = invite_through()
    again = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW + 0.5))
    assert isinstance(again, Forward)
    assert forwarded(again).top_via.branch == forwarded(first).top_via.branch


def test_absent_max_forwards_is_added() -> None:
    c = core(settings(IP_TRUNK))
    action = only(c.handle(request("INVITE", max_forwards=None), CLIENT, LOCAL, None, NOW))
    assert forwarded(action).max_forwards == 69


def test_max_forwards_zero() -> None:
    """SECURITY-CASES 17, RFC 4475 zeromf: 483 and nothing forwarded."""
    c = core(settings(IP_TRUNK))
    action = only(c.handle(request("OPTIONS", max_forwards=0), CLIENT, LOCAL, None, NOW))
    assert status_of(action) == 483
    assert action.cause is Cause.TOO_MANY_HOPS


def test_loop_detected() -> None:
    _c, action = invite_through()
    looped = action.data  # our own forwarded INVITE comes back to us
    c = core(settings(IP_TRUNK))
    reply = only(c.handle(looped, CLIENT, LOCAL, None, NOW))
    assert status_of(reply) == 482


def test_proxy_require_unknown_option() -> None:
    """SECURITY-CASES 18, RFC 4475 bext01: 420 listing the options in Unsupported."""
    c = core(settings(IP_TRUNK))
    req = request("OPTIONS", extra=["Proxy-Require: noProxyExtension, nothingHere"])
    reply = only(c.handle(req, CLIENT, LOCAL, None, NOW))
    assert status_of(reply) == 420
    assert isinstance(reply, Reply)
    assert b"Unsupported: noProxyExtension, nothingHere\r\n" in reply.data


def test_unknown_request_uri_scheme() -> None:
    """SECURITY-CASES 21, RFC 4475 unkscm."""
    c = core(settings(IP_TRUNK))
    req = request("OPTIONS", uri="nobodyKnowsThisScheme:totallyopaquecontent")
    assert status_of(only(c.handle(req, CLIENT, LOCAL, None, NOW))) == 416


def test_options_addressed_to_sipguard_answered() -> None:
    c = core(settings(IP_TRUNK))
    reply = only(c.handle(request("OPTIONS", uri="sip:127.0.0.1:5060"), CLIENT, LOCAL, None, NOW))
    assert status_of(reply) == 200
    assert reply.cause is Cause.OPTIONS_ANSWERED
    refused = only(
        c.handle(request("OPTIONS", uri="sip:127.0.0.1:5060"), STRANGER, LOCAL, None, NOW)
    )
    assert status_of(refused) == 403


def test_response_relayed_by_our_via() -> None:
    c, action = invite_through()
    for status in (100, 180, 200):
        relayed = only(c.handle(response_to(action, status), UPSTREAM, LOCAL, None, NOW))
        assert isinstance(relayed, Forward)
        assert relayed.cause is Cause.RESPONSE
        assert relayed.to == CLIENT
        msg = parse_message(relayed.data)
        assert isinstance(msg, Response) and msg.status == status
        assert len(msg.vias) == 1 and msg.top_via.branch == b"z9hG4bK-client-1"


def test_forged_response_dropped() -> None:
    """SECURITY-CASES 34: a Via that looks like ours but whose branch we did not make."""
    c, action = invite_through()
    data = response_to(action)
    branch = forwarded(action).top_via.branch
    assert branch is not None
    forged = data.replace(branch, branch[:-4] + b"0000")
    drop = only(c.handle(forged, UPSTREAM, LOCAL, None, NOW))
    assert isinstance(drop, Drop) and drop.cause is Cause.STRAY
    redirected = data.replace(b"sgf=udp-127.0.0.1-5061", b"sgf=udp-127.0.0.9-9")
    drop = only(c.handle(redirected, UPSTREAM, LOCAL, None, NOW))
    assert isinstance(drop, Drop) and drop.cause is Cause.STRAY


def test_stray_response_dropped() -> None:
    c = core(settings(IP_TRUNK))
    stray = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-x\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    drop = only(c.handle(stray, STRANGER, LOCAL, None, NOW))
    assert isinstance(drop, Drop) and drop.cause is Cause.STRAY


def test_untrusted_identity_headers_stripped_in_every_spelling() -> None:
    """SECURITY-CASES 28: nothing the upstream would take as asserted by us passes."""
    c = core(settings(IP_TRUNK))
    req = request(
        "INVITE",
        extra=[
            "P-Asserted-Identity: <sip:ceo@bank.example>",
            "p-asserted-IDENTITY: <sip:ceo@bank.example>",
            "X-Sipguard-Trunk: vip",
            "x-SIPGUARD-user: admin",
        ],
    )
    out = forwarded(only(c.handle(req, CLIENT, LOCAL, None, NOW)))
    assert out.get_all(b"p-asserted-identity") == []
    assert out.get_all(b"x-sipguard-trunk") == [b"office"]
    assert out.get_all(b"x-sipguard-user") == []
    assert b"ceo@bank" not in out.raw


def test_source_checked_is_the_socket_peer_not_via() -> None:
    """SECURITY-CASES 31."""
    c = core(settings(IP_TRUNK))
    req = request("INVITE", via_host="127.0.0.1:5061", extra=["X-Forwarded-For: 127.0.0.1"])
    assert status_of(only(c.handle(req, STRANGER, LOCAL, None, NOW))) == 403


def test_forged_to_tag_earns_nothing() -> None:
    """In-dialog look-alikes from a refused source are refused like new requests."""
    c = core(settings(IP_TRUNK))
    bye = request("BYE", to_tag="abc", extra=["Route: <sip:127.0.0.1:5060;lr>"])
    assert status_of(only(c.handle(bye, STRANGER, LOCAL, None, NOW))) == 403


def test_in_dialog_bye_survives_reload_that_removes_the_source() -> None:
    c, invite = invite_through()
    c.handle(response_to(invite), UPSTREAM, LOCAL, None, NOW)
    c.reconfigure(settings(Trunk("office", whitelist=parse_rules(("10.0.0.1",)))))
    bye = request(
        "BYE",
        cseq=2,
        branch="z9hG4bK-bye",
        to_tag="up-1",
        extra=["Route: <sip:127.0.0.1:5060;transport=udp;lr;sgf=udp-127.0.0.1-5061>"],
    )
    action = only(c.handle(bye, CLIENT, LOCAL, None, NOW + 10))
    assert isinstance(action, Forward) and action.cause is Cause.IN_DIALOG
    out = forwarded(action)
    assert out.get_all(b"route") == []  # our own Route entry is consumed
    fresh = request("INVITE", call_id="call-2")
    assert status_of(only(c.handle(fresh, CLIENT, LOCAL, None, NOW + 11))) == 403


def test_client_bye_lingers_for_its_retransmissions_then_the_dialog_is_gone() -> None:
    """A BYE of the client ends its dialog: its retransmissions pass for DIALOG_LINGER (not the
    DIALOG_TTL every other in-dialog request renews), then it is a request like any other."""
    c, invite = invite_through()
    c.handle(response_to(invite), UPSTREAM, LOCAL, None, NOW)
    c.reconfigure(settings(Trunk("office", whitelist=parse_rules(("10.0.0.1",)))))
    route = "Route: <sip:127.0.0.1:5060;transport=udp;lr;sgf=udp-127.0.0.1-5061>"
    info = request("INFO", cseq=2, branch="z9hG4bK-info", to_tag="up-1", extra=[route])
    action = only(c.handle(info, CLIENT, LOCAL, None, NOW + 10))
    assert isinstance(action, Forward) and action.cause is Cause.IN_DIALOG
    bye = request("BYE", cseq=3, branch="z9hG4bK-bye", to_tag="up-1", extra=[route])
    last = NOW + 20 + DIALOG_LINGER - 1
    for at in (NOW + 20, last):  # the BYE, then a retransmission (which lingers as long)
        action = only(c.handle(bye, CLIENT, LOCAL, None, at))
        assert isinstance(action, Forward) and action.cause is Cause.IN_DIALOG
    assert status_of(only(c.handle(bye, CLIENT, LOCAL, None, last + DIALOG_LINGER))) == 403


def test_bye_from_upstream_reaches_the_client_flow() -> None:
    c, invite = invite_through()
    rr = forwarded(invite).get_all(b"record-route")[0]
    bye = (
        b"BYE sip:alice@10.9.9.9:5999 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-up-1\r\n"
        b"Route: " + rr + b"\r\n"
        b"From: <sip:bot@127.0.0.1>;tag=up-1\r\nTo: <sip:alice@127.0.0.1>;tag=from-1\r\n"
        b"Call-ID: call-1@client\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    action = only(c.handle(bye, UPSTREAM, LOCAL, None, NOW + 5))
    assert isinstance(action, Forward)
    assert action.cause is Cause.FROM_UPSTREAM
    assert action.to == CLIENT  # the flow in our Record-Route, not the unreachable R-URI
    out = forwarded(action)
    assert out.get_all(b"route") == []
    assert out.max_forwards == 69
    # The client's 200 goes back to the upstream.
    ok = (
        b"SIP/2.0 200 OK\r\n"
        + b"".join(b"Via: " + v + b"\r\n" for v in out.get_all(b"via"))
        + b"From: <sip:bot@127.0.0.1>;tag=up-1\r\nTo: <sip:alice@127.0.0.1>;tag=from-1\r\n"
        b"Call-ID: call-1@client\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    back = only(c.handle(ok, CLIENT, LOCAL, None, NOW + 5))
    assert isinstance(back, Forward) and back.to == UPSTREAM


def test_invite_from_upstream_to_registered_pbx_follows_path() -> None:
    c = core(settings(IP_TRUNK))
    register = only(c.handle(request("REGISTER"), CLIENT, LOCAL, None, NOW))
    path = forwarded(register).get_all(b"path")
    assert len(path) == 1 and b"sgf=udp-127.0.0.1-5061" in path[0]
    invite = (
        b"INVITE sip:alice@192.168.1.20:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-up-2\r\n"
        b"Route: " + path[0] + b"\r\n"
        b"From: <sip:bot@127.0.0.1>;tag=up-2\r\nTo: <sip:alice@127.0.0.1>\r\n"
        b"Call-ID: call-up@platform\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    action = only(c.handle(invite, UPSTREAM, LOCAL, None, NOW + 1))
    assert isinstance(action, Forward) and action.to == CLIENT
    assert forwarded(action).get_all(b"record-route")  # the PBX's BYE comes back through us
    # The PBX's in-dialog BYE is admitted without a new check.
    bye = request("BYE", call_id="call-up@platform", to_tag="up-2", branch="z9hG4bK-pbx-bye")
    assert only(c.handle(bye, CLIENT, LOCAL, None, NOW + 2)).cause is Cause.IN_DIALOG


def test_double_record_route_when_transports_differ() -> None:
    tcp_up = Address(Transport.TCP, "127.0.0.1", 5070)
    tcp_local = Address(Transport.TCP, "127.0.0.1", 5060)
    c = core(settings(IP_TRUNK, upstream=tcp_up, listen=(LOCAL, tcp_local)))
    action = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Forward) and action.to == tcp_up
    out = forwarded(action)
    rr = out.get_all(b"record-route")
    assert len(rr) == 2
    assert b"transport=tcp" in rr[0] and b"transport=udp" in rr[1]
    assert out.top_via.transport == b"TCP"


def test_cancel_answered_once() -> None:
    """The upstream's 200 for our CANCEL is absorbed: the client already has ours."""
    c, invite = invite_through()
    ok, cancel = c.handle(request("CANCEL"), CLIENT, LOCAL, None, NOW + 1)
    assert status_of(ok) == 200
    assert isinstance(cancel, Forward)
    upstream_ok = response_to(cancel, 200)
    drop = only(c.handle(upstream_ok, UPSTREAM, LOCAL, None, NOW + 1))
    assert isinstance(drop, Drop)
    terminated = response_to(invite, 487, "Request Terminated")
    relayed = only(c.handle(terminated, UPSTREAM, LOCAL, None, NOW + 1))
    assert isinstance(relayed, Forward) and relayed.to == CLIENT
    ack = request("ACK", to_tag="up-1")  # the ACK for the 487 shares the INVITE's branch
    forwarded_ack = only(c.handle(ack, CLIENT, LOCAL, None, NOW + 2))
    assert isinstance(forwarded_ack, Forward)
    assert forwarded(forwarded_ack).top_via.branch == forwarded(invite).top_via.branch


def test_upstream_unreachable_gives_503() -> None:
    c, invite = invite_through()
    actions = c.upstream_failed(invite, NOW + 1)
    reply = only(actions)
    # the upstream pool answers the client itself (no other candidate: issue 14)
    assert isinstance(reply, Reply)
    assert reply.cause is Cause.UPSTREAM_ERROR
    assert reply.to == CLIENT
    msg = parse_message(reply.data)
    assert isinstance(msg, Response) and msg.status == 503
    assert len(msg.vias) == 1


def test_broadcast_via_never_a_destination() -> None:
    """SECURITY-CASES 16: we answer the socket peer, never an address written in Via."""
    c = core(settings(IP_TRUNK))
    req = request("OPTIONS", via_host="255.255.255.255:5060", max_forwards=0)
    reply = only(c.handle(req, CLIENT, LOCAL, None, NOW))
    assert isinstance(reply, Reply) and reply.to == CLIENT


def test_ipv4_mapped_source_is_matched_as_ipv4() -> None:
    c = core(settings(IP_TRUNK))
    mapped = dataclasses.replace(CLIENT, host="::ffff:127.0.0.1")
    action = only(c.handle(request("INVITE"), mapped, LOCAL, None, NOW))
    assert isinstance(action, Forward) and action.cause is Cause.ADMITTED_IP


def test_reconfigure_is_atomic_when_a_builder_fails() -> None:
    """A config that fails to compile (here an HA1 of an algorithm that bypassed validation,
    after the whitelist compiled) leaves the running config whole: nothing half swapped in
    (issue 6, reload)."""
    c = core(settings(IP_TRUNK))
    before = c.settings
    odd = Credential("bob", ha1={"MD4": "0" * 32})
    broken = settings(Trunk("office", whitelist=parse_rules(("10.0.0.1",)), credentials=(odd,)))
    with pytest.raises(ValueError, match="MD4"):
        c.reconfigure(broken)
    assert c.settings is before
    action = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Forward) and action.cause is Cause.ADMITTED_IP
    assert status_of(only(c.handle(request("INVITE"), STRANGER, LOCAL, None, NOW))) == 403


def test_destination_checks_are_cached_with_a_bound() -> None:
    # Responses and in-dialog requests check the same few addresses again and again: the answer
    # is remembered, and the memory stays bounded whatever the peers send.
    from sipguard.proxy import via as routing

    first = routing.checked_destination(Transport.UDP, "127.0.0.1", 5061)
    assert first == Address(Transport.UDP, "127.0.0.1", 5061)
    assert routing.checked_destination(Transport.UDP, "127.0.0.1", 5061) is first
    assert routing.checked_destination(Transport.UDP, "224.0.0.1", 5061) is None
    assert routing.checked_destination(Transport.UDP, "224.0.0.1", 5061) is None
    assert routing.checked_destination(Transport.UDP, "::ffff:7f00:1", 5061) == Address(
        Transport.UDP, "::ffff:7f00:1", 5061
    )
    token = b"tcp-10.0.0.1-5070"
    assert routing.parse_flow_token(token) == Address(Transport.TCP, "10.0.0.1", 5070)
    assert routing.parse_flow_token(token) is routing.parse_flow_token(token)
    assert routing.parse_flow_token(b"udp-0.0.0.0-5060") is None
    assert routing.parse_flow_token(b"bogus") is None
    for port in range(1, 2 * routing._CACHE_SIZE + 2):
        routing.checked_destination(Transport.UDP, "192.0.2.1", port)
        routing.parse_flow_token(b"udp-192.0.2.1-%d" % port)
    assert len(routing._DESTINATIONS) <= routing._CACHE_SIZE
    assert len(routing._TOKENS) <= routing._CACHE_SIZE


def _vias_joined(data: bytes) -> bytes:
    """The same message with all its Via values on one line, a comma list, where the first was."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    vias = [line[5:] for line in lines if line.startswith(b"Via: ")]
    first = next(i for i, line in enumerate(lines) if line.startswith(b"Via: "))
    others = [line for line in lines if not line.startswith(b"Via: ")]
    others.insert(first, b"Via: " + b", ".join(vias))
    return b"\r\n".join(others) + sep + body


def test_response_via_shapes_relayed_alike() -> None:
    """Two Via lines (read without parsing the whole list), one comma list, or a third Via
    below the client's: the same relay, to the same flow, with our Via removed."""
    c, action = invite_through()
    data = response_to(action)
    assert data.count(b"\r\nVia: ") == 2
    third = data.replace(
        b"\r\nRecord-Route",
        b"\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-far\r\nRecord-Route",
    )
    joined = _vias_joined(data)
    assert joined.count(b"\r\nVia: ") == 1
    for variant in (data, joined, third):
        relayed = only(c.handle(variant, UPSTREAM, LOCAL, None, NOW))
        assert isinstance(relayed, Forward) and relayed.cause is Cause.RESPONSE, variant
        assert relayed.to == CLIENT
        msg = parse_message(relayed.data)
        assert msg.top_via.branch == b"z9hG4bK-client-1"


def test_response_with_malformed_lower_via_is_a_parse_error() -> None:
    """A malformed Via below ours is refused whether it is the second or a later one."""
    c, action = invite_through()
    data = response_to(action)
    bad = b"\r\nVia: SIP/2.0/UDP ;;;\r\nRecord-Route"
    second = data.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5061", b"Via: SIP/2.0/UDP ;;;x")
    third = data.replace(b"\r\nRecord-Route", bad)
    for variant in (second, third):
        drop = only(c.handle(variant, UPSTREAM, LOCAL, None, NOW))
        assert isinstance(drop, Drop) and drop.cause is Cause.PARSE_ERROR, variant


def test_loop_detected_in_a_via_comma_list() -> None:
    _c, action = invite_through()
    looped = _vias_joined(action.data)  # our forwarded INVITE, its Vias on one line
    assert looped.count(b"\r\nVia: ") == 1
    c = core(settings(IP_TRUNK))
    assert status_of(only(c.handle(looped, CLIENT, LOCAL, None, NOW))) == 482


def test_nul_in_folded_header_is_refused() -> None:
    # A folded line is forwarded unfolded (SECURITY-CASES 10); one holding a NUL cannot be
    # written as one line, so the request is refused with 400 rather than escaping as a bug.
    c = core(settings(IP_TRUNK))
    data = request("INVITE", extra=["X-Note: a\x00b\r\n c"])
    action = only(c.handle(data, CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Reply) and action.cause is Cause.PARSE_ERROR
    assert status_of(action) == 400


def test_undelivered_request_from_upstream_is_answered_503_to_the_upstream() -> None:
    # The Forward carries the request as received: no bytes are parsed again to answer it.
    c = core(settings(IP_TRUNK))
    bye = request("BYE", uri="sip:alice@127.0.0.1:5061", to_tag="t-1")
    out = only(c.handle(bye, UPSTREAM, LOCAL, None, NOW))
    assert isinstance(out, Forward) and out.to == CLIENT and out.origin is not None
    answer = only(c.upstream_failed(out, NOW + 1))
    assert isinstance(answer, Forward) and answer.cause is Cause.UPSTREAM_ERROR
    assert answer.to == UPSTREAM and answer.info.status == 503
    msg = parse_message(answer.data)
    assert isinstance(msg, Response) and msg.status == 503 and len(msg.vias) == 1


def test_undelivered_relayed_response_is_dropped() -> None:
    c, invite = invite_through()
    ok = response_to(invite, 200, "OK")
    relayed = only(c.handle(ok, UPSTREAM, LOCAL, None, NOW))
    assert isinstance(relayed, Forward) and relayed.origin is None
    dropped = only(c.upstream_failed(relayed, NOW + 1))
    assert isinstance(dropped, Drop) and dropped.cause is Cause.UPSTREAM_ERROR


def test_every_reply_carries_its_status() -> None:
    # The shell reads the status and whether a reply accompanies a Forward from the values.
    c, _invite = invite_through()
    cancel = request("CANCEL", cseq_method="CANCEL")
    ok, fwd = c.handle(cancel, CLIENT, LOCAL, None, NOW + 1)
    assert isinstance(ok, Reply) and ok.status == 200 and ok.accompanies
    assert isinstance(fwd, Forward) and fwd.cause is Cause.CANCEL_FORWARDED
    refused = only(c.handle(request("INVITE"), STRANGER, LOCAL, None, NOW))
    assert isinstance(refused, Reply) and refused.status == status_of(refused) == 403
    assert not refused.accompanies
