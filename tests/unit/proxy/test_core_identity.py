"""Playbook tests of tenant identity in the core (issue 16): what an admitted request carries
to the upstream (signed), what a request from outside loses (every forged copy, whatever its
spelling), what traffic from the upstream keeps, and credential rotation at admission."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pytest

from sipguard.identity import Outcome, verify
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Action, Cause, Forward, Reply
from sipguard.proxy.core import Core
from sipguard.settings import Credential, IdentitySettings, Settings, SigningKey, Trunk
from sipguard.sip import parse_message
from tests.unit.proxy.playbook import (
    CLIENT,
    LOCAL,
    NOW,
    UPSTREAM,
    alice,
    answer,
    challenge,
    core,
    forwarded,
    only,
    request,
    settings,
    with_auth,
)

LOCALHOST = parse_rules(("127.0.0.1",))
K1 = SigningKey("k1", b"k1-secret-0123456789abcdef")
K2 = SigningKey("k2", b"k2-secret-fedcba9876543210")
ATTRS = (("org_id", "8d1c5e0a"), ("plan", "gold"))
IP_TRUNK = Trunk("office", whitelist=LOCALHOST, attributes=ATTRS)
DIGEST_TRUNK = Trunk("acme", whitelist=LOCALHOST, credentials=(alice(),), attributes=ATTRS)


def signed(*trunks: Trunk, keys: tuple[SigningKey, ...] = (K1,), **kw: object) -> Settings:
    identity = IdentitySettings(signing_keys=keys, **kw)  # type: ignore[arg-type]
    return dataclasses.replace(settings(*trunks), identity=identity)


def ours(data: bytes) -> list[bytes]:
    """Header lines with our prefix (any case), in order."""
    msg = parse_message(data)
    return [data[h.start : h.end - 2] for h in msg.headers if h.key.startswith(b"x-sipguard-")]


def sent(actions: list[Action]) -> Forward:
    action = only(actions)
    assert isinstance(action, Forward), action
    return action


def pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(h.name, h.value) for h in parse_message(data).headers]


def admitted_register(c: Core, *, password: str = "s3cret", now: float = NOW) -> Forward:
    params = challenge(only(c.handle(request("REGISTER"), CLIENT, LOCAL, None, now)))
    value = answer(params, "REGISTER", password=password)
    data = with_auth(request("REGISTER", cseq=2), "Authorization", value)
    return sent(c.handle(data, CLIENT, LOCAL, None, now))


def test_ip_admitted_invite_is_signed() -> None:
    c = core(signed(IP_TRUNK))
    action = sent(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Forward) and action.cause is Cause.ADMITTED_IP
    lines = ours(action.data)
    assert lines[:5] == [
        b"X-Sipguard-Trunk: office",
        b"X-Sipguard-Attr-Org-Id: 8d1c5e0a",
        b"X-Sipguard-Attr-Plan: gold",
        b"X-Sipguard-Auth: ip",
        b"X-Sipguard-Source: 127.0.0.1:5061",
    ]
    assert re.fullmatch(
        rb"X-Sipguard-Identity: v=1;kid=k1;ts=1800000000;mac=[0-9a-f]{64}", lines[5]
    )
    assert len(lines) == 6
    assert verify(pairs(action.data), [K1], NOW + 1, 30) is Outcome.VALID
    assert verify(pairs(action.data), [K1], NOW + 31, 30) is Outcome.EXPIRED


def test_digest_admitted_request_carries_user_and_auth() -> None:
    c = core(signed(DIGEST_TRUNK, keys=(K2, K1)))
    action = admitted_register(c)
    lines = ours(action.data)
    assert lines[:2] == [b"X-Sipguard-Trunk: acme", b"X-Sipguard-User: alice"]
    assert b"X-Sipguard-Auth: digest" in lines
    assert b";kid=k2;" in lines[-1]  # the first key signs
    assert verify(pairs(action.data), [K2, K1], NOW, 30) is Outcome.VALID
    assert verify(pairs(action.data), [K1], NOW, 30) is Outcome.UNKNOWN_KEY


def test_without_identity_section_plain_headers_as_before() -> None:
    c = core(settings(Trunk("office", whitelist=LOCALHOST)))
    action = sent(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert ours(action.data) == [b"X-Sipguard-Trunk: office"]
    c = core(settings(Trunk("acme", whitelist=LOCALHOST, credentials=(alice(),))))
    assert ours(admitted_register(c).data) == [b"X-Sipguard-Trunk: acme", b"X-Sipguard-User: alice"]


FORGED = {
    "plain": b"X-Sipguard-Trunk: other",
    "lowercase_attribute": b"x-sipguard-attr-org-id: forged",
    "uppercase": b"X-SIPGUARD-USER: forged",
    "folded": b"X-Sipguard-Trunk:\r\n other",
    "folded_tab": b"x-sipguard-attr-org-id:\r\n\tforged",
    "space_before_colon": b"X-Sipguard-Trunk   :   other",
    "tab_before_colon": b"x-sipguard-auth\t: ip",
    "repeated": b"X-Sipguard-Trunk: other\r\nX-Sipguard-Trunk: other2",
    "signature": b"X-Sipguard-Identity: v=1;kid=k1;ts=1;mac=" + b"0" * 64,
    "unknown_prefixed": b"X-Sipguard-Whatever: forged",
    "p_asserted_identity": b"P-Asserted-Identity: <sip:forged@platform>",
    "p_asserted_identity_folded": b"P-Asserted-Identity:\r\n <sip:forged@platform>",
    "strip_inbound": b"X-Forwarded-For: 198.51.100.7\r\nRemote-Party-ID: <sip:forged@x>",
    "x_authenticated_user": b"X-Authenticated-User: forged",
}


@pytest.mark.parametrize("form", FORGED)
def test_forged_headers_never_reach_the_upstream(form: str) -> None:
    c = core(signed(IP_TRUNK))
    data = request("INVITE", extra=[FORGED[form].decode()])
    action = sent(c.handle(data, CLIENT, LOCAL, None, NOW))
    for value in (b"other", b"forged", b"198.51.100.7", b"ts=1;"):
        assert value not in action.data, (value, action.data)
    lines = ours(action.data)
    assert [x.split(b":")[0] for x in lines] == [
        b"X-Sipguard-Trunk",
        b"X-Sipguard-Attr-Org-Id",
        b"X-Sipguard-Attr-Plan",
        b"X-Sipguard-Auth",
        b"X-Sipguard-Source",
        b"X-Sipguard-Identity",
    ]
    assert verify(pairs(action.data), [K1], NOW, 30) is Outcome.VALID


@pytest.mark.parametrize("form", ["plain", "lowercase_attribute", "folded", "p_asserted_identity"])
def test_forged_headers_stripped_without_identity_section(form: str) -> None:
    c = core(settings(Trunk("office", whitelist=LOCALHOST)))
    action = sent(
        c.handle(request("INVITE", extra=[FORGED[form].decode()]), CLIENT, LOCAL, None, NOW)
    )
    assert b"forged" not in action.data and b"other" not in action.data
    assert ours(action.data) == [b"X-Sipguard-Trunk: office"]


def test_custom_prefix_and_strip_list() -> None:
    c = core(signed(IP_TRUNK, header_prefix="X-Tenant-", strip_inbound=("X-Forwarded-For",)))
    extra = ["x-tenant-trunk: other", "X-Forwarded-For: 198.51.100.7", "Remote-Party-ID: <sip:r@x>"]
    action = sent(c.handle(request("INVITE", extra=extra), CLIENT, LOCAL, None, NOW))
    out = forwarded(action)
    assert b"other" not in action.data and b"198.51.100.7" not in action.data
    assert out.get_all(b"x-tenant-trunk") == [b"office"]
    assert out.get_all(b"remote-party-id") == [b"<sip:r@x>"]  # not on this list
    assert verify(pairs(action.data), [K1], NOW, 30, prefix="X-Tenant-") is Outcome.VALID


def test_traffic_from_the_upstream_passes_untouched() -> None:
    c = core(signed(IP_TRUNK))
    register = only(c.handle(request("REGISTER"), CLIENT, LOCAL, None, NOW))
    path = forwarded(register).get_all(b"path")
    invite = (
        b"INVITE sip:alice@192.168.1.20:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-up-2\r\n"
        b"Route: " + path[0] + b"\r\n"
        b"From: <sip:bot@127.0.0.1>;tag=up-2\r\nTo: <sip:alice@127.0.0.1>\r\n"
        b"Call-ID: call-up@platform\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        b"X-Sipguard-Trunk: platform-said\r\nP-Asserted-Identity: <sip:bot@platform>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    action = only(c.handle(invite, UPSTREAM, LOCAL, None, NOW + 1))
    assert isinstance(action, Forward) and action.to == CLIENT
    out = forwarded(action)
    assert out.get_all(b"x-sipguard-trunk") == [b"platform-said"]
    assert out.get_all(b"p-asserted-identity") == [b"<sip:bot@platform>"]
    assert out.get(b"x-sipguard-identity") is None


# --------------------------------------------------------------------------- rotation

UNTIL = NOW + 3600


def rotation() -> Settings:
    old = Credential("alice", password="old-pw", valid_until=datetime.fromtimestamp(UNTIL, UTC))
    new = Credential("alice", password="new-pw")
    return settings(Trunk("acme", whitelist=LOCALHOST, credentials=(old, new)))


def refusal(c: Core, password: str, now: float) -> bytes:
    params = challenge(only(c.handle(request("REGISTER"), CLIENT, LOCAL, None, now)))
    value = answer(params, "REGISTER", password=password)
    data = with_auth(request("REGISTER", cseq=2), "Authorization", value)
    action = only(c.handle(data, CLIENT, LOCAL, None, now))
    assert isinstance(action, Reply) and action.cause is Cause.AUTH_FAILED, action
    return re.sub(rb"(\r\nTo:[^\r]*;tag=)[^;\r]*", rb"\1X", action.data)


def test_rotation_both_passwords_then_only_the_new_one() -> None:
    c = core(rotation())
    assert admitted_register(c, password="old-pw", now=UNTIL - 1).cause is Cause.ADMITTED_DIGEST
    assert admitted_register(c, password="new-pw", now=UNTIL - 1).cause is Cause.ADMITTED_DIGEST
    assert admitted_register(c, password="new-pw", now=UNTIL).cause is Cause.ADMITTED_DIGEST
    # after valid_until the old secret is refused byte for byte like a wrong one
    assert refusal(core(rotation()), "old-pw", UNTIL) == refusal(core(rotation()), "guess", UNTIL)
