"""SECURITY-CASES.md: one regression test per case, named after it.

The cases the sans-IO core decides are tested here with the exact bytes of the corpora; those
that need real sockets (slow-loris, connection exhaustion, floods, real attack tools) are in
tests/integration and named the same way (test_case_06_..., test_case_09_..., test_case_33_...).
Expected behaviour: R = a SIP error reply, D = a silent drop; never a crash, never forwarded
unless the case says so.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sipguard.errors import ParseError
from sipguard.policy.whitelist import parse_rule, parse_rules
from sipguard.proxy.actions import Action, Address, Cause, Drop, Forward, Reply, Transport
from sipguard.proxy.core import Core
from sipguard.settings import Trunk
from sipguard.sip import KeepAlive, Request, Response, StreamFramer, parse_message
from tests.conftest import CORPORA
from tests.unit.proxy.playbook import (
    CLIENT,
    LOCAL,
    NOW,
    STRANGER,
    UPSTREAM,
    alice,
    answer,
    challenge,
    core,
    forwarded,
    only,
    request,
    settings,
    status_of,
    with_auth,
)

RFC4475 = Path(CORPORA, "rfc4475")
RFC5118 = Path(CORPORA, "rfc5118", "wire")
IP_TRUNK = Trunk("office", whitelist=parse_rules(("127.0.0.1", "::1")))
DIGEST_TRUNK = Trunk("acme", whitelist=parse_rules(("127.0.0.1",)), credentials=(alice(),))


def ip_core() -> Core:
    return core(settings(IP_TRUNK))


def corpus(name: str) -> bytes:
    return (RFC4475 / f"{name}.dat").read_bytes()


def run(data: bytes, peer: Address = CLIENT, c: Core | None = None) -> list[Action]:
    return (c or ip_core()).handle(data, peer, LOCAL, None, NOW)


def status_line(action: Action) -> int:
    """The status of a reply we built, read from its start line (a reply copies the request's
    headers as they were, even a CSeq too large to parse again)."""
    assert isinstance(action, Reply), action
    return int(action.data.split(b" ", 2)[1])


def refused(actions: list[Action], *statuses: int) -> None:
    """R (one of `statuses`) or D, and nothing forwarded."""
    assert not any(isinstance(a, Forward) for a in actions), actions
    for action in actions:
        if isinstance(action, Reply):
            assert status_line(action) in statuses, action.data[:60]


def replied(actions: list[Action], status: int) -> None:
    action = only(actions)
    assert status_line(action) == status


def dropped(actions: list[Action]) -> None:
    assert all(isinstance(a, Drop) for a in actions), actions


# ---------------------------------------------------------------- framing and transport


def test_case_01_trailing_octets_in_udp_datagram() -> None:
    action = only(run(corpus("dblreq")))
    out = forwarded(action)
    assert out.method == b"REGISTER"
    assert b"INVITE" not in action.data  # type: ignore[union-attr]


def test_case_02_content_length_larger_than_datagram() -> None:
    refused(run(corpus("clerr")), 400)


@pytest.mark.parametrize(
    "value",
    [b"-999", b"+5", b"0005", b"1 0", b"2147483648", b"4294967328", b"18446744073709551616"],
)
def test_case_03_bad_content_length(value: bytes) -> None:
    data = request("OPTIONS", body=b"hello").replace(
        b"Content-Length: 5", b"Content-Length: " + value
    )
    replied(run(data), 400)
    framer = StreamFramer()
    with pytest.raises(ParseError):
        framer.feed(data)


def test_case_03_negative_content_length_corpus() -> None:
    replied(run(corpus("ncl")), 400)


@pytest.mark.parametrize(
    "headers",
    [
        [b"Content-Length: 0", b"Content-Length: 0"],
        [b"Content-Length: 0, 193"],
        [b"l: 0", b"Content-Length: 0"],
    ],
)
def test_case_04_multiple_content_length(headers: list[bytes]) -> None:
    data = request("OPTIONS").replace(b"Content-Length: 0\r\n", b"\r\n".join(headers) + b"\r\n")
    replied(run(data), 400)
    refused(run(corpus("mcl01")), 400)


def test_case_05_tcp_message_without_content_length() -> None:
    data = request("OPTIONS").replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(ParseError):
        StreamFramer().feed(data)


def test_case_06_fragments_and_keepalives_reassembled() -> None:
    """The deadline part of case 6 is test_case_06_tcp_slowloris in tests/integration."""
    one, two = request("OPTIONS", call_id="a"), request("INVITE", call_id="b", body=b"v=0\r\n")
    stream = b"\r\n\r\n" + one + b"\r\n\r\n" + two
    framer = StreamFramer()
    frames: list[object] = []
    for i in range(len(stream)):
        frames.extend(framer.feed(stream[i : i + 1]))
    assert [f for f in frames if isinstance(f, bytes)] == [one, two]
    assert frames.count(KeepAlive.PING) == 2


def test_case_07_oversized_message() -> None:
    big = request("OPTIONS", extra=["X-Big: " + "a" * 70000])
    refused(run(big), 513, 400)
    many = request("OPTIONS", extra=[f"X-H{i}: v" for i in range(10000)])
    refused(run(many), 513, 400)
    long_name = request("OPTIONS", extra=["X" * 1_000_000 + ": v"])
    refused(run(long_name), 513, 400)
    assert isinstance(only(run(corpus("longreq"))), Forward)  # large but legitimate


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n",
        bytes(range(256)) * 4,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes.fromhex("16030100a5010000a10303") + b"\x00" * 100,  # TLS ClientHello
        bytes.fromhex("000100002112a442") + b"\x00" * 12,  # STUN binding request
    ],
)
def test_case_08_garbage_and_non_sip(data: bytes) -> None:
    for peer in (CLIENT, STRANGER):
        dropped(run(data, peer))


# ---------------------------------------------------------------- start line and headers


def test_case_10_header_name_tricks() -> None:
    refused(run(request("OPTIONS").replace(b"To:", b"To\x01:")), 400)
    # Folded lines are accepted as RFC 3261 reads them and forwarded unfolded.
    folded = request("INVITE").replace(b"Call-ID: call-1@client", b"Call-ID:\r\n call-1@client")
    out = forwarded(only(run(folded)))
    assert out.call_id == b"call-1@client"
    assert b"\r\n call-1" not in out.raw
    compact = request("INVITE").replace(b"Call-ID:", b"i:").replace(b"To:", b"t:")
    assert forwarded(only(run(compact))).call_id == b"call-1@client"


@pytest.mark.parametrize("name", [b"To", b"From", b"Call-ID", b"CSeq", b"Max-Forwards"])
def test_case_11_duplicate_single_value_headers(name: bytes) -> None:
    data = request("OPTIONS")
    start = data.index(name + b":")
    line = data[start : data.index(b"\r\n", start) + 2]
    refused(run(data.replace(line, line + line)), 400)
    refused(run(corpus("multi01")), 400)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("lwsstart", 400),
        ("trws", 400),
        ("ltgtruri", 400),
        ("lwsruri", 400),
        ("badvers", 505),
        ("mismatch01", 400),
        ("mismatch02", 400),
    ],
)
def test_case_12_malformed_start_lines(name: str, status: int) -> None:
    refused(run(corpus(name)), status)


def test_case_12_overlarge_response_code_dropped() -> None:
    dropped(run(corpus("bigcode"), UPSTREAM))


def test_case_13_nul_and_odd_bytes() -> None:
    assert isinstance(only(run(corpus("intmeth"))), Forward)  # legal odd bytes, unknown method
    assert isinstance(only(run(corpus("escnull"))), Forward)  # %00 in URIs is not a NUL
    bare_cr = request("OPTIONS").replace(b"Call-ID: call-1", b"Call-ID: ca\rll-1")
    refused(run(bare_cr), 400)
    nul_name = request("OPTIONS").replace(b"Contact:", b"Con\x00tact:")
    refused(run(nul_name), 400)


def test_case_14_overlarge_scalars() -> None:
    replied(run(corpus("scalar02")), 400)
    dropped(run(corpus("scalarlg"), UPSTREAM))


def test_case_15_missing_mandatory_headers() -> None:
    refused(run(corpus("insuf")), 400)
    no_via = b"\r\n".join(
        line for line in request("OPTIONS").split(b"\r\n") if not line.startswith(b"Via:")
    )
    dropped(run(no_via))


def test_case_16_via_abuse() -> None:
    # Our replies go to the socket peer, never to the address a client wrote in Via.
    fake = request("OPTIONS", via_host="255.255.255.255:5060", max_forwards=0)
    reply = only(run(fake))
    assert isinstance(reply, Reply) and reply.to == CLIENT
    # A response with a broadcast Via is not ours: nothing is sent anywhere.
    dropped(run(corpus("bcast"), UPSTREAM))
    # received/rport written by the client are overwritten with what we saw.
    lying = request("INVITE").replace(b";rport", b";received=10.0.0.1;rport=1")
    via = forwarded(only(run(lying))).vias[1]
    assert (via.received, via.rport) == (b"127.0.0.1", 5061)
    assert isinstance(only(run(corpus("transports"))), Forward)


def test_case_17_max_forwards_zero_and_loops() -> None:
    replied(run(corpus("zeromf")), 483)
    c = ip_core()
    looped = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert isinstance(looped, Forward)
    replied(run(looped.data, CLIENT, c), 482)


def test_case_18_proxy_require_unknown_option() -> None:
    reply = only(run(corpus("bext01")))
    assert isinstance(reply, Reply) and status_of(reply) == 420
    assert b"Unsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis" in reply.data


# ---------------------------------------------------------------- URIs and addresses


def test_case_19_ipv6_in_uris() -> None:
    refused(run((RFC5118 / "ipv6-bad.dat").read_bytes()), 400)
    for name in ("ipv6-good", "port-ambiguous", "port-unambiguous", "ipv4-mapped-ipv6"):
        assert isinstance(only(run((RFC5118 / f"{name}.dat").read_bytes())), Forward), name
    zone = request("OPTIONS", uri="sip:[fe80::1%25eth0]:5060")
    refused(run(zone), 400, 416)


def test_case_20_escapes_and_headers_in_uris() -> None:
    refused(run(corpus("escruri")), 400)
    out = forwarded(only(run(corpus("regescrt"))))
    assert out.get_all(b"route") == []  # ?Route= inside Contact is never materialised
    assert isinstance(only(run(corpus("esc01"))), Forward)


def test_case_21_unknown_uri_schemes() -> None:
    replied(run(corpus("unkscm")), 416)
    replied(run(corpus("novelsc")), 416)
    assert isinstance(only(run(corpus("unksm2"))), Forward)  # odd schemes in To/From only
    long_scheme = request("OPTIONS", uri="x" * 1000 + ":opaque")
    refused(run(long_scheme), 416, 400)


# ---------------------------------------------------------------- digest


def digest_core() -> Core:
    return core(settings(DIGEST_TRUNK))


def test_case_22_method_coverage() -> None:
    c = digest_core()
    for data in (corpus("esc02"), corpus("intmeth"), request("register"), request("FOO")):
        action = only(c.handle(data, CLIENT, LOCAL, None, NOW))
        assert isinstance(action, Reply)
        assert status_of(action) == 407  # challenged like any non-REGISTER, never exempted
    refused(run(request("OPTIONS").replace(b"OPTIONS sip", b"OPTIONS\x00 sip"), CLIENT, c), 400)
    refused(run(request("REGISTER").replace(b"REGISTER sip", b"REGISTER  sip"), CLIENT, c), 400)


@pytest.mark.parametrize(
    "value",
    [
        "NoOneKnowsThisScheme foo=bar",
        "Basic YWxpY2U6czNjcmV0",
        'Digest username="alice", realm="sipguard.test"',
        'Digest username="alice, realm="sipguard.test", nonce="n"',
        'Digest username="alice", username="bob", realm="sipguard.test"',
        "Digest username",
        'Digest username="alice\\',
        'Digest username="' + "a" * 100_000 + '"',
        'Digest username="alice", realm="sipguard.test", nonce="n", uri="sip:x", '
        'response="00000000000000000000000000000000", algorithm=unknown',
        'Digest username="alice", realm="sipguard.test", nonce="n", uri="sip:x", '
        'response="00000000000000000000000000000000", qop=auth-int, nc=00000001, cnonce="c"',
    ],
)
def test_case_23_unknown_or_broken_credentials(value: str) -> None:
    refused(run(with_auth(request(), "Authorization", value), CLIENT, digest_core()), 400, 401, 513)
    refused(run(corpus("regaut01"), CLIENT, digest_core()), 401, 407)


def test_case_24_replay_and_nonce_misuse() -> None:
    c = digest_core()
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    good = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    assert only(c.handle(good, CLIENT, LOCAL, None, NOW + 1)).cause is Cause.ADMITTED_DIGEST
    # The same header on a new Call-ID, and the same nc again: refused.
    other_call = with_auth(
        request(cseq=2, call_id="new"), "Authorization", answer(params, "REGISTER")
    )
    assert only(c.handle(other_call, CLIENT, LOCAL, None, NOW + 2)).cause is Cause.AUTH_FAILED
    # A nonce we never issued.
    forged = dict(params, nonce="A" * 43)
    value = answer(forged, "REGISTER")
    never = with_auth(request(cseq=3), "Authorization", value)
    assert only(c.handle(never, CLIENT, LOCAL, None, NOW + 3)).cause is Cause.AUTH_FAILED
    # A nonce from before a restart (another process, same key): its counts are gone.
    fresh = core(settings(DIGEST_TRUNK))
    restarted = Core(
        settings(DIGEST_TRUNK), nonce_key=b"k" * 32, boot_id=b"boot0002", started_at=NOW + 10
    )
    params = challenge(only(fresh.handle(request(), CLIENT, LOCAL, None, NOW)))
    old = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    assert only(restarted.handle(old, CLIENT, LOCAL, None, NOW + 11)).cause is Cause.AUTH_FAILED


def test_case_25_credential_binding() -> None:
    c = digest_core()
    params = challenge(only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)))
    wrong_uri = answer(params, "INVITE", uri="sip:elsewhere@127.0.0.1")
    data = with_auth(request("INVITE", cseq=2), "Proxy-Authorization", wrong_uri)
    assert only(c.handle(data, CLIENT, LOCAL, None, NOW)).cause is Cause.AUTH_FAILED
    wrong_method = answer(params, "REGISTER", nc=2)
    data = with_auth(request("INVITE", cseq=3), "Proxy-Authorization", wrong_method)
    assert only(c.handle(data, CLIENT, LOCAL, None, NOW)).cause is Cause.AUTH_FAILED
    # A realm that is not ours is not an answer to our challenge: a fresh challenge.
    other_realm = answer(params, "INVITE", realm="evil.example", nc=3)
    data = with_auth(request("INVITE", cseq=4), "Proxy-Authorization", other_realm)
    assert only(c.handle(data, CLIENT, LOCAL, None, NOW)).cause is Cause.CHALLENGED


def test_case_26_timing_and_enumeration() -> None:
    replies = []
    for username, password in (("alice", "wrong"), ("nobody", "s3cret")):
        c = digest_core()
        params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
        value = answer(params, "REGISTER", username=username, password=password)
        action = only(
            c.handle(with_auth(request(cseq=2), "Authorization", value), CLIENT, LOCAL, None, NOW)
        )
        assert isinstance(action, Reply)
        replies.append(action.data)
    assert replies[0] == replies[1]


def test_case_27_digest_leak() -> None:
    """A 401/407 from a client is relayed to whoever asked; sipguard never answers it."""
    c = digest_core()
    invite = (
        b"INVITE sip:alice@127.0.0.1:5061 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-up\r\n"
        b"From: <sip:bot@platform>;tag=u\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: leak\r\n"
        b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out = forwarded(only(c.handle(invite, UPSTREAM, LOCAL, None, NOW)))
    challenge_back = (
        b"SIP/2.0 407 Proxy Authentication Required\r\n"
        + b"".join(b"Via: " + v + b"\r\n" for v in out.get_all(b"via"))
        + b"From: <sip:bot@platform>;tag=u\r\nTo: <sip:alice@127.0.0.1>;tag=c\r\n"
        b'Call-ID: leak\r\nCSeq: 1 INVITE\r\nProxy-Authenticate: Digest realm="x", nonce="y"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    action = only(c.handle(challenge_back, CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Forward) and action.to == UPSTREAM
    assert b"Authorization" not in action.data


def test_case_28_auth_header_stripping() -> None:
    c = digest_core()
    params = challenge(only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)))
    data = with_auth(request("INVITE", cseq=2), "Proxy-Authorization", answer(params, "INVITE"))
    data = data.replace(
        b"Content-Length",
        b"P-ASSERTED-identity: <sip:admin@x>\r\nX-Sipguard-User: root\r\nContent-Length",
    )
    out = forwarded(only(c.handle(data, CLIENT, LOCAL, None, NOW)))
    assert out.get_all(b"proxy-authorization") == []
    assert out.get_all(b"p-asserted-identity") == []
    assert out.get_all(b"x-sipguard-user") == [b"alice"]


# ---------------------------------------------------------------- IP whitelist


@pytest.mark.parametrize(
    "rule", ["203.0.113.5", "203.0.113.*", "203.0.113.0-203.0.113.9", "203.0.113.0/24"]
)
def test_case_29_ipv4_mapped_and_embedded_forms(rule: str) -> None:
    c = core(settings(Trunk("t", whitelist=parse_rules((rule,)))))
    mapped = Address(Transport.UDP, "::ffff:203.0.113.5", 5060)
    assert isinstance(only(c.handle(request("INVITE"), mapped, LOCAL, None, NOW)), Forward)
    for embedded in ("::203.0.113.5", "64:ff9b::cb00:7105", "2002:cb00:7105::"):
        peer = Address(Transport.UDP, embedded, 5060)
        refused(c.handle(request("INVITE"), peer, LOCAL, None, NOW), 403)


@pytest.mark.parametrize(
    "text",
    [
        "010.0.0.1",
        "10.1",
        "0x0a.0.0.1",
        "10.0.0.256",
        "10.0.0.9-10.0.0.1",
        "10.0.0.1-::1",
        "10.0.0.1/8",
        "10.0.0.0/33",
        "::/129",
        "10.*.0.1",
        "2001:db8::*",
        "fe80::1%eth0",
        " 10.0.0.1",
    ],
)
def test_case_30_rule_parsing(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(text)


def test_case_31_which_address_is_checked() -> None:
    liar = request("INVITE", via_host="127.0.0.1:5061").replace(
        b"Contact: <sip:alice@127.0.0.1:5061>",
        b"Contact: <sip:alice@127.0.0.1>\r\nX-Real-IP: 127.0.0.1",
    )
    refused(run(liar, STRANGER), 403)


@pytest.mark.parametrize(
    ("method", "transport"),
    list(
        itertools.product(
            ["REGISTER", "INVITE", "OPTIONS", "MESSAGE", "BYE", "FOO"], list(Transport)
        )
    ),
)
def test_case_32_whitelist_and_auth_interplay(method: str, transport: Transport) -> None:
    """A source that is not whitelisted never reaches the upstream, whatever it sends: one 403
    (`auth.refuse` is "403"); a whitelisted one still needs credentials where its trunk has
    them: one challenge, 401 for REGISTER, 407 otherwise (RFC 3261 §22.1, §22.3)."""
    c = digest_core()
    stranger = Address(transport, "127.0.0.2", 5061)
    for data in (request(method), request(method, to_tag="t")):
        action = only(c.handle(data, stranger, LOCAL, None, NOW))
        assert isinstance(action, Reply) and action.cause is Cause.ACL_DENIED, action
        assert status_line(action) == 403
    friend = Address(transport, "127.0.0.1", 5061)
    action = only(c.handle(request(method), friend, LOCAL, None, NOW))
    assert isinstance(action, Reply) and action.cause is Cause.CHALLENGED, action
    assert status_line(action) == (401 if method == "REGISTER" else 407)


# ---------------------------------------------------------------- resources


def test_case_33_flood_creates_no_state() -> None:
    """The core side of the flood case: 20,000 unauthenticated requests from 50 ports leave no
    per-request state behind (the socket-level flood is test_case_33_flood in integration)."""
    c = digest_core()
    for i in range(20000):
        peer = Address(Transport.UDP, "127.0.0.1", 40000 + i % 50)
        c.handle(
            request(call_id=f"flood-{i}", branch=f"z9hG4bK-{i}"), peer, LOCAL, None, NOW + i / 2000
        )
    assert len(c._transactions) == 0
    assert len(c._dialogs) == 0
    assert len(c._tracker) == 0


def test_case_34_response_floods_and_strays() -> None:
    c = ip_core()
    stray = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsg0000000000000000"
        b"0000;sgf=udp-127.0.0.1-9\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    for peer in (UPSTREAM, STRANGER):
        dropped(c.handle(stray, peer, LOCAL, None, NOW))
    for method in ("ACK", "CANCEL"):
        dropped(c.handle(request(method, to_tag="z"), CLIENT, LOCAL, None, NOW))
    assert len(c._transactions) == 0 and len(c._dialogs) == 0


def test_case_35_upstream_failure() -> None:
    c = ip_core()
    invite = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert isinstance(invite, Forward)
    failure = only(c.upstream_failed(invite, NOW + 1))
    # the upstream pool answers the client itself when no other upstream is left (issue 14)
    assert isinstance(failure, Reply | Forward) and failure.to == CLIENT
    msg = parse_message(failure.data)
    assert isinstance(msg, Response) and msg.status == 503
    dropped(c.handle(b"\x00garbage\r\n\r\n", UPSTREAM, LOCAL, None, NOW))
    huge = b"SIP/2.0 200 OK\r\nX: " + b"a" * 100_000 + b"\r\n\r\n"
    dropped(c.handle(huge, UPSTREAM, LOCAL, None, NOW))
    assert isinstance(parse_message(invite.data), Request)
