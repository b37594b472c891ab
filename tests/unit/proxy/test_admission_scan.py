"""Admission reads a fast-path request's credential and Proxy-Require lines from the core's one
scan (`Context.found`, `outgoing.edited_lines`) instead of building the header index (issue 13):
the same lines, values and header indices as the index gives, and the same decisions."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.proxy import admission, digest_check
from sipguard.proxy.actions import Info
from sipguard.proxy.context import Context
from sipguard.proxy.outgoing import edited_lines
from sipguard.sip import Request, parse_message
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, REALM
from tests.unit.proxy.test_outgoing import CORE, EXTRA, VIA

CREDENTIALS = st.sampled_from(
    [
        f'Proxy-Authorization: Digest username="a", realm="{REALM}", nonce="n", uri="sip:x", '
        'response="0123456789abcdef0123456789abcdef"',
        f'authorization: Digest username="b", realm="{REALM}", nonce="m", uri="sip:y", '
        'response="0123456789abcdef0123456789abcdef"',
        "Proxy-Require: foo",
        "Proxy-Require: foo, bar",
    ]
)


def _contexts(msg: Request) -> tuple[Context, Context]:
    found = edited_lines(msg, CORE._config.needs_index)
    base = (CORE._config, CORE._state, msg, CLIENT, LOCAL, None, NOW, CLIENT.host, found == [])
    return Context(*base, found), Context(*base)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["INVITE", "REGISTER", "OPTIONS"]),
    via=VIA,
    before=st.lists(st.one_of(EXTRA, CREDENTIALS), max_size=3),
    after=st.lists(st.one_of(EXTRA, CREDENTIALS), max_size=4),
)
def test_scanned_and_indexed_admission_agree(
    method: str, via: str, before: list[str], after: list[str]
) -> None:
    lines = [
        f"{method} sip:bot@127.0.0.1:5060 SIP/2.0",
        *before,
        f"Via: {via}",
        "From: <sip:alice@127.0.0.1>;tag=f-1",
        "To: <sip:bot@127.0.0.1>",
        "Call-ID: c-1@client",
        f"CSeq: 1 {method}",
        *after,
        "Content-Length: 0",
        "",
        "",
    ]
    data = "\r\n".join(lines).encode()
    try:
        msg = parse_message(data, CORE.parser_limits)
    except ParseError:
        return  # e.g. two Max-Forwards: refused before admission
    assert isinstance(msg, Request)
    if msg.matched_span("via") is None or edited_lines(msg, CORE._config.needs_index) is None:
        return  # not read on the fast path: nothing scanned
    scanned, indexed = _contexts(msg)
    assert digest_check._our_credentials(scanned) == digest_check._our_credentials(indexed)
    for key in (b"proxy-require", b"authorization", b"proxy-authorization"):
        assert admission._may_have(scanned, key) == (key in msg)
    info = Info(method, "c-1@client")
    assert admission._sanity(scanned, info) == admission._sanity(indexed, info)
