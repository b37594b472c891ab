"""Playbook tests of admission (DESIGN §4, issue 4): bytes + peer + now in, actions out."""

from __future__ import annotations

import dataclasses
import re

import pytest

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Cause, Drop, Forward, Reply
from sipguard.proxy.core import Core
from sipguard.settings import Credential, Protection, Trunk
from tests.unit.proxy.playbook import (
    CLIENT,
    KEY,
    LOCAL,
    NOW,
    R_URI,
    REALM,
    STRANGER,
    UPSTREAM,
    alice,
    answer,
    challenge,
    challenges,
    core,
    digest_trunk,
    expiry,
    forwarded,
    only,
    request,
    settings,
    status_of,
    with_auth,
)

IP_TRUNK = Trunk("office", whitelist=parse_rules(("127.0.0.1",)))


def authenticated(method: str = "REGISTER") -> tuple[Core, bytes]:
    """A core and a request that answers its challenge correctly."""
    c = core(settings(digest_trunk()))
    first = request(method)
    params = challenge(only(c.handle(first, CLIENT, LOCAL, None, NOW)))
    header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    return c, with_auth(request(method, cseq=2), header, answer(params, method))


def test_ip_only_trunk_admits_at_once() -> None:
    c = core(settings(IP_TRUNK))
    action = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Forward)
    assert action.cause is Cause.ADMITTED_IP
    assert action.to == UPSTREAM
    assert action.info.trunk == "office"
    assert forwarded(action).get(b"x-sipguard-trunk") == b"office"


def test_credentials_only_trunk_challenges_any_source_then_admits() -> None:
    c = core(settings(Trunk("open-auth", credentials=(alice(),))))
    action = only(c.handle(request("REGISTER"), STRANGER, LOCAL, None, NOW))
    assert status_of(action) == 401
    params = challenge(action)
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    admitted = only(c.handle(req, STRANGER, LOCAL, None, NOW + 1))
    assert isinstance(admitted, Forward)
    assert admitted.cause is Cause.ADMITTED_DIGEST
    assert (admitted.info.trunk, admitted.info.user) == ("open-auth", "alice")


def test_trunk_with_whitelist_and_credentials_needs_both() -> None:
    c = core(settings(digest_trunk()))
    assert status_of(only(c.handle(request(), CLIENT, LOCAL, None, NOW))) == 401
    refused = only(c.handle(request(), STRANGER, LOCAL, None, NOW))
    assert status_of(refused) == 403
    assert refused.cause is Cause.ACL_DENIED


def test_source_no_trunk_admits_is_refused_403() -> None:
    c = core(settings(IP_TRUNK))
    action = only(c.handle(request("INVITE"), STRANGER, LOCAL, None, NOW))
    assert isinstance(action, Reply)
    assert status_of(action) == 403
    assert action.to == STRANGER
    assert len(action.data) <= len(request("INVITE"))  # no amplification


def test_source_no_trunk_admits_is_dropped_when_configured() -> None:
    c = core(settings(IP_TRUNK, refuse="drop"))
    action = only(c.handle(request("INVITE"), STRANGER, LOCAL, None, NOW))
    assert isinstance(action, Drop)
    assert action.cause is Cause.ACL_DENIED


@pytest.mark.parametrize(
    ("method", "status", "header"),
    [
        ("REGISTER", 401, b"WWW-Authenticate"),
        ("INVITE", 407, b"Proxy-Authenticate"),
        ("OPTIONS", 407, b"Proxy-Authenticate"),
        ("MESSAGE", 407, b"Proxy-Authenticate"),
        ("FOO", 407, b"Proxy-Authenticate"),
        ("RE%47IST%45R", 407, b"Proxy-Authenticate"),  # not REGISTER (RFC 4475 esc02)
        ("register", 407, b"Proxy-Authenticate"),  # methods are case-sensitive
    ],
)
def test_no_credentials_is_challenged(method: str, status: int, header: bytes) -> None:
    c = core(settings(digest_trunk()))
    action = only(c.handle(request(method), CLIENT, LOCAL, None, NOW))
    assert status_of(action) == status
    assert action.cause is Cause.CHALLENGED
    assert header + b": Digest " in action.data  # type: ignore[union-attr]
    params = challenge(action)
    assert params["realm"] == REALM
    assert params["qop"] == "auth"
    assert params["opaque"]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "SHA-512-256"])
@pytest.mark.parametrize("method", ["REGISTER", "INVITE"])
def test_correct_answer_is_admitted(algorithm: str, method: str) -> None:
    c = core(settings(digest_trunk(), algorithms=(algorithm,)))
    params = challenge(only(c.handle(request(method), CLIENT, LOCAL, None, NOW)))
    assert params["algorithm"] == algorithm
    header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    req = with_auth(request(method, cseq=2), header, answer(params, method))
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))
    assert isinstance(action, Forward)
    assert action.cause is Cause.ADMITTED_DIGEST
    out = forwarded(action)
    assert out.get(b"authorization") is None  # credentials for our realm are removed
    assert out.get(b"proxy-authorization") is None
    assert out.get(b"x-sipguard-user") == b"alice"


def test_challenge_order_per_trunk() -> None:
    trunk = digest_trunk(algorithms=("SHA-256", "MD5"))
    c = core(settings(trunk, algorithms=("MD5",)))
    offered = challenges(only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)))
    assert [p["algorithm"] for p in offered] == ["SHA-256", "MD5"]
    assert len({p["nonce"] for p in offered}) == 1  # one nonce for all (RFC 8760 §2.4)

    default = core(settings(digest_trunk(), algorithms=("SHA-512-256", "SHA-256", "MD5")))
    offered = challenges(only(default.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)))
    assert [p["algorithm"] for p in offered] == ["SHA-512-256", "SHA-256", "MD5"]


def _refusal_for(trunk: Trunk, username: str = "alice", password: str = "s3cret") -> bytes:
    c = core(settings(trunk))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    req = with_auth(
        request(cseq=2),
        "Authorization",
        answer(params, "REGISTER", username=username, password=password),
    )
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))
    assert isinstance(action, Reply)
    assert action.cause is Cause.AUTH_FAILED
    assert status_of(action) == 403
    return re.sub(rb"tag=[^;\r\n]*", b"tag=X", action.data)


def test_wrong_password_unknown_user_expired_credential_replies_identical() -> None:
    """SECURITY-CASES 26: no user enumeration."""
    wrong_password = _refusal_for(digest_trunk(), password="guess")
    unknown_user = _refusal_for(digest_trunk(), username="mallory")
    expired = Trunk(
        "acme",
        whitelist=parse_rules(("127.0.0.1",)),
        credentials=(Credential("alice", password="s3cret", valid_until=expiry(-1)),),
    )
    expired_credential = _refusal_for(expired)
    assert wrong_password == unknown_user == expired_credential


def test_credential_valid_until_in_future_admits() -> None:
    trunk = Trunk(
        "acme",
        whitelist=parse_rules(("127.0.0.1",)),
        credentials=(Credential("alice", password="s3cret", valid_until=expiry(1)),),
    )
    c = core(settings(trunk))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    assert only(c.handle(req, CLIENT, LOCAL, None, NOW + 1)).cause is Cause.ADMITTED_DIGEST


def test_stale_nonce() -> None:
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    later = NOW + 301  # nonce_ttl 300
    action = only(c.handle(req, CLIENT, LOCAL, None, later))
    assert status_of(action) == 401
    assert action.cause is Cause.STALE_NONCE
    fresh = challenge(action)
    assert fresh["stale"] == "true"
    assert fresh["nonce"] != params["nonce"]


def test_stale_nonce_with_wrong_password_is_a_failure_not_stale() -> None:
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER", password="x"))
    assert only(c.handle(req, CLIENT, LOCAL, None, NOW + 301)).cause is Cause.AUTH_FAILED


def test_nonce_replay() -> None:
    """SECURITY-CASES 24: the same nc twice, and a decreasing nc, are refused."""
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    second = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER", nc=2))
    assert only(c.handle(second, CLIENT, LOCAL, None, NOW + 1)).cause is Cause.ADMITTED_DIGEST
    # The same answer on another request (a new branch and CSeq): a replay.
    again = with_auth(
        request(cseq=5, branch="z9hG4bK-client-5"),
        "Authorization",
        answer(params, "REGISTER", nc=2),
    )
    replay = only(c.handle(again, CLIENT, LOCAL, None, NOW + 2))
    assert replay.cause is Cause.AUTH_FAILED
    assert replay.info.detail == "nonce-count replayed"
    decreasing = with_auth(request(cseq=3), "Authorization", answer(params, "REGISTER", nc=1))
    assert only(c.handle(decreasing, CLIENT, LOCAL, None, NOW + 3)).cause is Cause.AUTH_FAILED
    increasing = with_auth(request(cseq=4), "Authorization", answer(params, "REGISTER", nc=3))
    assert only(c.handle(increasing, CLIENT, LOCAL, None, NOW + 4)).cause is Cause.ADMITTED_DIGEST


def test_nonce_signed_with_another_key_is_refused() -> None:
    other = core(settings(digest_trunk()), key=b"x" * 32)
    params = challenge(only(other.handle(request(), CLIENT, LOCAL, None, NOW)))
    c = core(settings(digest_trunk()))
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))
    assert action.cause is Cause.AUTH_FAILED


def test_nonce_from_another_source() -> None:
    both = Trunk("acme", whitelist=parse_rules(("127.0.0.1", "127.0.0.2")), credentials=(alice(),))
    c = core(settings(both))
    params = challenge(only(c.handle(request(), STRANGER, LOCAL, None, NOW)))
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))
    assert action.cause is Cause.AUTH_FAILED
    assert action.info.detail == "nonce not issued to this source"


def test_nonce_shared_by_instances_with_one_key() -> None:
    """Any instance holding the shared secret checks the others' nonces (DESIGN §6)."""
    first, second = core(settings(digest_trunk())), core(settings(digest_trunk()))
    params = challenge(only(first.handle(request(), CLIENT, LOCAL, None, NOW)))
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    assert only(second.handle(req, CLIENT, LOCAL, None, NOW + 1)).cause is Cause.ADMITTED_DIGEST


@pytest.mark.parametrize("method", ["REGISTER", "INVITE"])
def test_udp_retransmission_of_admitted_request_is_forwarded_again(method: str) -> None:
    """RFC 3261 §17.1.2.2/§16.11: a UDP client retransmits the very same request (same nonce
    and nc) until it hears a response; each copy is forwarded on the same branch, never refused
    as a nonce-count replay (found by scripts/bench: a lost 200 turned into a 403)."""
    c, data = authenticated(method)
    first = only(c.handle(data, CLIENT, LOCAL, None, NOW + 1))
    assert isinstance(first, Forward) and first.cause is Cause.ADMITTED_DIGEST
    for delay in (1.5, 2.5, 4.5, 31.0):
        again = only(c.handle(data, CLIENT, LOCAL, None, NOW + delay))
        assert isinstance(again, Forward), (delay, again)
        assert again.data == first.data
    # Past Timer F (32 s) it is not a retransmission any more: the nonce-count was used.
    late = only(c.handle(data, CLIENT, LOCAL, None, NOW + 40))
    assert late.cause is Cause.AUTH_FAILED and late.info.detail == "nonce-count replayed"


def test_retransmission_memory_needs_the_same_request_and_source() -> None:
    """Only the same source, branch, Call-ID and CSeq count as a retransmission."""
    c, data = authenticated()
    assert isinstance(only(c.handle(data, CLIENT, LOCAL, None, NOW + 1)), Forward)
    other_branch = data.replace(b"z9hG4bK-client-1", b"z9hG4bK-client-9")
    assert only(c.handle(other_branch, CLIENT, LOCAL, None, NOW + 2)).cause is Cause.AUTH_FAILED
    other_cseq = data.replace(b"CSeq: 2 REGISTER", b"CSeq: 3 REGISTER")
    assert only(c.handle(other_cseq, CLIENT, LOCAL, None, NOW + 3)).cause is Cause.AUTH_FAILED


def test_register_credentials_replayed_on_invite() -> None:
    """SECURITY-CASES 25: the response covers the method."""
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)))
    register_answer = answer(params, "REGISTER")
    invite = with_auth(request("INVITE", cseq=2), "Proxy-Authorization", register_answer)
    assert only(c.handle(invite, CLIENT, LOCAL, None, NOW + 1)).cause is Cause.AUTH_FAILED


def test_digest_uri_must_match_request_uri() -> None:
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    other_uri = "sip:other@127.0.0.1:5060"
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER", uri=other_uri))
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))
    assert action.cause is Cause.AUTH_FAILED
    assert action.info.detail == "digest uri differs from the Request-URI"


def test_second_authorization_for_another_realm_forwarded_untouched() -> None:
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    foreign = 'Digest username="bob", realm="carrier.example", nonce="n", uri="sip:x", response="0"'
    req = with_auth(request(cseq=2), "Authorization", foreign)
    req = with_auth(req, "Authorization", answer(params, "REGISTER"))
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))
    assert action.cause is Cause.ADMITTED_DIGEST
    out = forwarded(action)
    assert out.get_all(b"authorization") == [foreign.encode()]


def test_two_answers_for_our_realm_are_a_bad_request() -> None:
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER"))
    req = with_auth(req, "Authorization", answer(params, "REGISTER", nc=2))
    assert status_of(only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))) == 400


@pytest.mark.parametrize(
    "value",
    [
        "NoOneKnowsThisScheme foo=bar",
        "Basic YWxpY2U6czNjcmV0",
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{R_URI}"',  # no response
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{R_URI}", response="00",'
        " algorithm=MD5-sess",
    ],
)
def test_unusable_credentials_get_a_fresh_challenge(value: str) -> None:
    """SECURITY-CASES 23 (and RFC 4475 regaut01): never admitted, never a crash."""
    c = core(settings(digest_trunk()))
    req = with_auth(request(), "Authorization", value)
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW))
    assert status_of(action) in (400, 401)
    assert not isinstance(action, Forward)


def test_algorithm_not_offered_gets_a_fresh_challenge() -> None:
    c = core(settings(digest_trunk(), algorithms=("SHA-256",)))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    req = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER", algorithm="MD5"))
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))
    assert status_of(action) == 401
    assert action.cause is Cause.CHALLENGED


def test_ack_for_our_challenge_is_absorbed_and_never_challenged() -> None:
    c = core(settings(digest_trunk()))
    reply = only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW))
    assert isinstance(reply, Reply)
    tag = re.search(rb"To: [^\r\n]*;tag=([^;\r\n]+)", reply.data)
    assert tag is not None
    ack = request("ACK", to_tag=tag.group(1).decode())
    action = only(c.handle(ack, CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Drop)
    assert action.cause is Cause.ACK_ABSORBED


def test_stray_ack_and_cancel_are_dropped_without_challenge() -> None:
    """SECURITY-CASES 34: no state, no reply."""
    c = core(settings(digest_trunk()))
    for method in ("ACK", "CANCEL"):
        action = only(c.handle(request(method, to_tag="x"), CLIENT, LOCAL, None, NOW))
        assert isinstance(action, Drop)
        assert action.cause is Cause.STRAY


def test_cancel_of_admitted_invite_answered_and_forwarded_on_its_branch() -> None:
    c, invite = authenticated("INVITE")
    admitted = only(c.handle(invite, CLIENT, LOCAL, None, NOW + 1))
    assert isinstance(admitted, Forward)
    cancel = request("CANCEL", cseq=2)
    ok, forward = c.handle(cancel, CLIENT, LOCAL, None, NOW + 2)
    assert status_of(ok) == 200
    assert isinstance(forward, Forward)
    assert forward.cause is Cause.CANCEL_FORWARDED
    assert forwarded(forward).top_via.branch == forwarded(admitted).top_via.branch


def test_failed_answers_ban_the_source() -> None:
    c = core(settings(digest_trunk(), protection=Protection(ban_failures=3)))
    for i in range(3):
        params = challenge(only(c.handle(request(cseq=2 * i + 1), CLIENT, LOCAL, None, NOW + i)))
        bad = answer(params, "REGISTER", password=f"guess{i}")
        req = with_auth(request(cseq=2 * i + 2), "Authorization", bad)
        assert only(c.handle(req, CLIENT, LOCAL, None, NOW + i)).cause is Cause.AUTH_FAILED
    banned = only(c.handle(request(), CLIENT, LOCAL, None, NOW + 4))
    assert isinstance(banned, Drop)
    assert banned.cause is Cause.BANNED
    events = c.tick(NOW + 5)
    assert [(e.ip, e.failures) for e in events] == [("127.0.0.1", 3)]
    assert c.active_bans == 1
    assert [e.until for e in c.tick(NOW + 5 + 600)] == [0.0]  # unbanned
    assert status_of(only(c.handle(request(), CLIENT, LOCAL, None, NOW + 606))) == 401


def test_wrong_answer_kills_the_nonce() -> None:
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    bad = with_auth(request(cseq=2), "Authorization", answer(params, "REGISTER", password="x"))
    assert only(c.handle(bad, CLIENT, LOCAL, None, NOW + 1)).cause is Cause.AUTH_FAILED
    good = with_auth(request(cseq=3), "Authorization", answer(params, "REGISTER", nc=2))
    assert only(c.handle(good, CLIENT, LOCAL, None, NOW + 2)).cause is Cause.AUTH_FAILED


def test_scanner_user_agent_dropped_silently() -> None:
    c = core(settings(IP_TRUNK))
    req = request("OPTIONS", extra=["User-Agent: friendly-scanner"])
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW))
    assert isinstance(action, Drop)
    assert action.cause is Cause.SCANNER


def test_key_is_not_in_any_action() -> None:
    c, req = authenticated()
    for action in c.handle(req, CLIENT, LOCAL, None, NOW + 1):
        assert KEY not in getattr(action, "data", b"")
        assert "s3cret" not in repr(action)


def test_digest_uri_without_ipv6_brackets_is_the_same_uri() -> None:
    """SIPp writes uri="sip:::1:5060" for the Request-URI sip:[::1]:5060."""
    c = core(settings(Trunk("acme", whitelist=parse_rules(("::1",)), credentials=(alice(),))))
    v6 = dataclasses.replace(CLIENT, host="::1")
    uri = "sip:[::1]:5060"
    params = challenge(only(c.handle(request(uri=uri), v6, LOCAL, None, NOW)))
    value = answer(params, "REGISTER", uri="sip:::1:5060")
    req = with_auth(request(uri=uri, cseq=2), "Authorization", value)
    assert only(c.handle(req, v6, LOCAL, None, NOW + 1)).cause is Cause.ADMITTED_DIGEST
    value = answer(params, "REGISTER", uri="sip:::2:5060", nc=2)
    req = with_auth(request(uri=uri, cseq=3), "Authorization", value)
    assert only(c.handle(req, v6, LOCAL, None, NOW + 1)).cause is Cause.AUTH_FAILED


def test_digest_uri_naming_the_host_without_user_is_the_same_uri() -> None:
    """SIPp answers INVITE sip:service@HOST:PORT with uri="sip:HOST:PORT"."""
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)))
    value = answer(params, "INVITE", uri="sip:127.0.0.1:5060")
    req = with_auth(request("INVITE", cseq=2), "Proxy-Authorization", value)
    assert only(c.handle(req, CLIENT, LOCAL, None, NOW + 1)).cause is Cause.ADMITTED_DIGEST
    for n, uri in enumerate(("sip:127.0.0.1:5061", "sips:127.0.0.1:5060", "sip:10.0.0.1:5060")):
        value = answer(params, "INVITE", uri=uri, nc=n + 2)
        req = with_auth(request("INVITE", cseq=n + 3), "Proxy-Authorization", value)
        assert only(c.handle(req, CLIENT, LOCAL, None, NOW + 1)).cause is Cause.AUTH_FAILED, uri


def test_credentials_for_us_in_the_other_header_are_stripped_too() -> None:
    # A REGISTER answered in Authorization that also carries a Proxy-Authorization for our realm
    # (parsed only when forwarding) and one for another realm: ours go, the foreign one stays.
    c = core(settings(digest_trunk()))
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    foreign = 'Digest username="bob", realm="carrier.example", nonce="n", uri="sip:x", response="0"'
    ours_elsewhere = answer(params, "REGISTER", nonce="x" * 43)
    req = with_auth(request(cseq=2), "Proxy-Authorization", ours_elsewhere)
    req = with_auth(req, "Proxy-Authorization", foreign)
    req = with_auth(req, "Proxy-Authorization", "Basic YWxpY2U6czNjcmV0")
    req = with_auth(req, "Authorization", answer(params, "REGISTER"))
    action = only(c.handle(req, CLIENT, LOCAL, None, NOW + 1))
    assert action.cause is Cause.ADMITTED_DIGEST
    out = forwarded(action)
    assert out.get_all(b"authorization") == []
    assert out.get_all(b"proxy-authorization") == [foreign.encode(), b"Basic YWxpY2U6czNjcmV0"]


def test_whitelisted_source_is_not_rate_limited() -> None:
    # Issue 12 item 6: the anonymous per-source bucket is for sources only an open trunk
    # admits; a carrier named in a trunk's whitelist is never throttled by it.
    tight = Protection(rate=1.0, burst=2)
    named = core(settings(digest_trunk(), protection=tight))
    statuses = [
        status_of(only(named.handle(request("INVITE", cseq=n), CLIENT, LOCAL, None, NOW)))
        for n in range(1, 11)
    ]
    assert statuses == [407] * 10
    open_trunk = Trunk("acme", credentials=(alice(),))
    anonymous = core(settings(open_trunk, protection=tight))
    statuses = [
        status_of(only(anonymous.handle(request("INVITE", cseq=n), CLIENT, LOCAL, None, NOW)))
        for n in range(1, 5)
    ]
    assert statuses == [407, 407, 503, 503]
