"""A listener's advertised address (`listen[].advertise`): what our Via, Record-Route and Path
name when the socket's own address is no address a peer can send to (a wildcard listener, an
address behind NAT), and that requests naming it are recognised as ours."""

from __future__ import annotations

import dataclasses

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Address, Cause, Forward, Transport
from sipguard.proxy.core import Core
from sipguard.settings import Listener, Trunk
from sipguard.sip import Request, parse_message
from tests.unit.proxy.playbook import (
    CLIENT,
    NOW,
    UPSTREAM,
    core,
    forwarded,
    only,
    request,
    settings,
)
from tests.unit.proxy.test_core_routing import response_to

WILDCARD = Address(Transport.UDP, "0.0.0.0", 5060)  # the socket's address
NAMED = b"203.0.113.5:5080"
IP_TRUNK = Trunk("office", whitelist=parse_rules(("127.0.0.1",)))


def advertised_core(advertise: tuple[str, int] | None = ("203.0.113.5", 5080)) -> Core:
    base = settings(IP_TRUNK, listen=(WILDCARD,))
    listen = (Listener("udp", WILDCARD.host, WILDCARD.port, advertise=advertise),)
    return core(dataclasses.replace(base, listen=listen))


def test_forwarded_invite_names_the_advertised_address_never_the_wildcard() -> None:
    c = advertised_core()
    fwd = only(c.handle(request("INVITE"), CLIENT, WILDCARD, None, NOW))
    assert isinstance(fwd, Forward) and fwd.cause is Cause.ADMITTED_IP
    sent = forwarded(fwd)
    assert sent.get_all(b"via")[0].startswith(b"SIP/2.0/UDP " + NAMED + b";branch=z9hG4bK")
    assert sent.get_all(b"record-route") == [
        b"<sip:" + NAMED + b";transport=udp;lr;sgf=udp-127.0.0.1-5061>"
    ]
    assert b"0.0.0.0" not in fwd.data
    assert fwd.local == WILDCARD  # sent from the socket, which the shell finds by its address


def test_register_path_names_the_advertised_address() -> None:
    c = advertised_core()
    fwd = only(c.handle(request("REGISTER"), CLIENT, WILDCARD, None, NOW))
    assert isinstance(fwd, Forward)
    assert forwarded(fwd).get_all(b"path") == [
        b"<sip:" + NAMED + b";transport=udp;lr;sgf=udp-127.0.0.1-5061>"
    ]


def test_responses_and_the_upstream_requests_back_along_the_advertised_route() -> None:
    c = advertised_core()
    fwd = only(c.handle(request("INVITE"), CLIENT, WILDCARD, None, NOW))
    assert isinstance(fwd, Forward)
    ok = only(c.handle(response_to(fwd), UPSTREAM, WILDCARD, None, NOW))
    assert isinstance(ok, Forward) and ok.cause is Cause.RESPONSE and ok.to == CLIENT
    # the callee hangs up: its BYE carries our Record-Route as its Route (RFC 3261 §12.1.2)
    route = forwarded(fwd).get_all(b"record-route")[0]
    bye = request(
        "BYE",
        uri="sip:alice@127.0.0.1:5061",
        call_id="call-1@client",
        branch="z9hG4bK-up-bye",
        via_host="127.0.0.1:5070",
        extra=[f"Route: {route.decode()}"],
    )
    back = only(c.handle(bye, UPSTREAM, WILDCARD, None, NOW))
    assert isinstance(back, Forward) and back.cause is Cause.FROM_UPSTREAM
    assert back.to == CLIENT
    sent = parse_message(back.data)
    assert isinstance(sent, Request)
    assert not sent.get_all(b"route")  # recognised as ours and popped
    assert sent.get_all(b"via")[0].startswith(b"SIP/2.0/UDP " + NAMED + b";branch=")
    assert b"0.0.0.0" not in back.data


def test_a_route_naming_the_advertised_address_in_any_spelling_is_ours() -> None:
    """A Route value that is not written as we write ours is parsed and compared with every
    address we answer to: the advertised one counts."""
    c = advertised_core()
    bye = request(
        "BYE",
        uri="sip:alice@127.0.0.1:5061",
        branch="z9hG4bK-up-bye-2",
        via_host="127.0.0.1:5070",
        extra=["Route: <sip:203.0.113.5:5080;lr>"],
    )
    back = only(c.handle(bye, UPSTREAM, WILDCARD, None, NOW))
    assert isinstance(back, Forward) and back.to == CLIENT
    sent = parse_message(back.data)
    assert isinstance(sent, Request) and not sent.get_all(b"route")


def test_without_advertise_the_socket_address_is_named_as_before() -> None:
    c = advertised_core(advertise=None)
    fwd = only(c.handle(request("INVITE"), CLIENT, WILDCARD, None, NOW))
    assert isinstance(fwd, Forward)
    assert forwarded(fwd).get_all(b"via")[0].startswith(b"SIP/2.0/UDP 0.0.0.0:5060;branch=")
