"""A request read on the parser's fast path with lines to edit or strip (Route, Record-Route,
Path, credentials, identity headers) is written from the match and one scan for those lines
(`outgoing.edited_lines`), with no header index (issue 13). It must give the bytes of the
indexed writer, also when admission already decided which credential lines are ours
(`Admitted.credentials`, by header index).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.proxy import forwarding
from sipguard.proxy.actions import Cause, Info
from sipguard.proxy.context import Admitted, Context
from sipguard.proxy.forwarding import write_request
from sipguard.proxy.replies import CREDENTIAL_KEYS, is_our_credential
from sipguard.sip import Request, parse_message
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, REALM
from tests.unit.proxy.test_outgoing import CORE, EXTRA, TCP_LOCAL, VIA

OURS = (
    f'Proxy-Authorization: Digest username="a", realm="{REALM}", nonce="n", uri="sip:x", '
    'response="0123456789abcdef0123456789abcdef"'
)


def _both(msg: Request, admitted: Admitted, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    ctx = Context(CORE._config, CORE._state, msg, CLIENT, LOCAL, None, NOW, CLIENT.host, False)
    scanned = write_request(ctx, admitted, TCP_LOCAL, msg.max_forwards)
    with monkeypatch.context() as patch:
        patch.setattr(forwarding, "edited_lines", lambda msg, pattern: None)
        indexed = write_request(ctx, admitted, TCP_LOCAL, msg.max_forwards)
    return scanned, indexed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["INVITE", "REGISTER", "BYE", "ACK"]),
    via=VIA,
    before=st.lists(st.one_of(EXTRA, st.just(OURS)), max_size=3),
    after=st.lists(st.one_of(EXTRA, st.just(OURS)), max_size=4),
    decided=st.booleans(),
)
def test_scanned_and_indexed_writers_agree(
    method: str, via: str, before: list[str], after: list[str], decided: bool
) -> None:
    lines = [
        f"{method} sip:bot@127.0.0.1:5060 SIP/2.0",
        *before,
        f"Via: {via}",
        "From: <sip:alice@127.0.0.1>;tag=f-1",
        "To: <sip:bot@127.0.0.1>;tag=t-1",
        "Call-ID: c-1@client",
        f"CSeq: 1 {method}",
        *after,
        "Content-Length: 0",
        "",
        "",
    ]
    try:
        msg = parse_message("\r\n".join(lines).encode(), CORE.parser_limits)
        assert isinstance(msg, Request)
        # what admission hands forwarding: which credential lines are ours, by header index
        known = {
            i: is_our_credential(header.value, REALM)
            for i, header in enumerate(msg.headers)
            if header.key in CREDENTIAL_KEYS
        }
        admitted = Admitted(Cause.ADMITTED_DIGEST, Info("", "", "acme", "a"), known or None)
        with pytest.MonkeyPatch.context() as monkeypatch:
            scanned, indexed = _both(msg, admitted, monkeypatch)
    except ParseError:
        return  # a malformed header read on demand: refused on both paths alike
    assert scanned == indexed
    assert OURS.encode() not in scanned


def test_our_credentials_are_stripped_on_the_scanned_path() -> None:
    data = (
        "INVITE sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport\r\n"
        f"{OURS}\r\n"
        "Route: <sip:127.0.0.1:5060;lr>, <sip:10.9.9.9;lr>\r\n"
        "From: <sip:alice@127.0.0.1>;tag=f-1\r\n"
        "To: <sip:bot@127.0.0.1>\r\n"
        "Call-ID: c-1@client\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data, CORE.parser_limits)
    assert isinstance(msg, Request) and msg.matched_span("via") is not None
    admitted = Admitted(Cause.ADMITTED_DIGEST, Info("", "", "acme", "a"), {1: True})
    ctx = Context(CORE._config, CORE._state, msg, CLIENT, LOCAL, None, NOW, CLIENT.host, False)
    alone = write_request(ctx, admitted, TCP_LOCAL, msg.max_forwards)
    assert msg._index is None  # written without the header index
    with pytest.MonkeyPatch.context() as monkeypatch:
        scanned, indexed = _both(msg, admitted, monkeypatch)
    assert alone == scanned == indexed
    assert b"Proxy-Authorization" not in scanned
    assert b"\r\nRoute: <sip:10.9.9.9;lr>\r\n" in scanned
