"""A request read on the parser's fast path with lines to edit or strip (Route, Record-Route,
Path, credentials, identity headers) is written from the match and one scan for those lines
(`outgoing.edited_lines`), with no header index (issue 13). It must give the bytes of the
indexed writer, also when admission already decided which credential lines are ours
(`Admitted.credentials`, by header index); Route elements written as we write our
Record-Route are recognised without parsing; the top Via's received/rport are set by
splitting its value, as the edit-by-edit writer sets them.
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
from sipguard.proxy.outgoing import edited_lines
from sipguard.proxy.replies import CREDENTIAL_KEYS, is_our_credential
from sipguard.proxy.routes import found_routes, our_routes
from sipguard.sip import Request, parse_message
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, REALM
from tests.unit.proxy.test_outgoing import CORE, EXTRA, TCP_LOCAL, VIA, compare

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


ROUTE_ELEMENTS = [
    "<sip:127.0.0.1:5060;transport=udp;lr;sgf=udp-127.0.0.1-5061>",  # ours, as we write it
    "<sip:127.0.0.1:5060;transport=tcp;lr>",
    "<sip:[::1]:5060;transport=udp;lr;sgf=udp-::1-5062>",
    "<sip:127.0.0.1:5060;lr>",  # ours, written by someone else: parsed
    "<sip:127.0.0.1:5060;transport=udp;lr;sgf=udp-127.0.0.1-5061;x=1>",
    "<SIP:127.0.0.1:5060;transport=udp;lr>",
    "<sip:10.9.9.9;lr>",  # not ours
    "<sip:127.0.0.1:5070;transport=udp;lr>",
    '"x" <sip:127.0.0.1:5060;transport=udp;lr>',
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    routes=st.lists(
        st.lists(st.sampled_from(ROUTE_ELEMENTS), min_size=1, max_size=3), min_size=1, max_size=3
    ),
    method=st.sampled_from(["BYE", "ACK", "INVITE"]),
)
def test_our_record_route_values_are_recognised_as_parsed(
    routes: list[list[str]], method: str
) -> None:
    """Route elements written as we write our Record-Route name us without being parsed; the
    count and the bytes are those of the general reading."""
    data = "\r\n".join(
        [
            f"{method} sip:bot@127.0.0.1:5060 SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport",
            *("Route: " + ", ".join(line) for line in routes),
            "From: <sip:alice@127.0.0.1>;tag=f-1",
            "To: <sip:bot@127.0.0.1>;tag=t-1",
            "Call-ID: c-1@client",
            f"CSeq: 1 {method}",
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    msg = parse_message(data, CORE.parser_limits)
    assert isinstance(msg, Request) and msg.matched_span("via") is not None
    found = edited_lines(msg, CORE._config.needs_index)
    assert found is not None
    # the count and the client flow our Record-Route carries: those of the general reading
    assert found_routes(CORE._config, msg, found) == our_routes(CORE._config, msg)
    admitted = Admitted(Cause.IN_DIALOG, Info("", "", "", ""))
    with pytest.MonkeyPatch.context() as monkeypatch:
        scanned, indexed = _both(msg, admitted, monkeypatch)
    assert scanned == indexed


def test_a_route_we_wrote_is_popped() -> None:
    """The Record-Route of a forwarded INVITE, sent back as the Route of the BYE, is ours."""
    invite = parse_message(
        "\r\n".join(
            [
                "INVITE sip:bot@127.0.0.1:5060 SIP/2.0",
                "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport",
                "From: <sip:alice@127.0.0.1>;tag=f-1",
                "To: <sip:bot@127.0.0.1>",
                "Call-ID: c-1@client",
                "CSeq: 1 INVITE",
                "Content-Length: 0",
                "",
                "",
            ]
        ).encode(),
        CORE.parser_limits,
    )
    assert isinstance(invite, Request)
    ctx = Context(CORE._config, CORE._state, invite, CLIENT, LOCAL, None, NOW, CLIENT.host, True)
    sent = write_request(ctx, Admitted(Cause.ADMITTED_IP, Info()), TCP_LOCAL, 70)
    record_routes = [line for line in sent.split(b"\r\n") if line.startswith(b"Record-Route:")]
    assert len(record_routes) == 2  # UDP in, TCP on: double record-routing (RFC 5658)
    routes = b"".join(b"Route:" + line[len(b"Record-Route:") :] + b"\r\n" for line in record_routes)
    bye = parse_message(
        (
            b"BYE sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-2;rport\r\n"
        )
        + routes
        + (
            b"From: <sip:alice@127.0.0.1>;tag=f-1\r\n"
            b"To: <sip:bot@127.0.0.1>;tag=t-1\r\n"
            b"Call-ID: c-1@client\r\n"
            b"CSeq: 2 BYE\r\n"
            b"Content-Length: 0\r\n\r\n"
        ),
        CORE.parser_limits,
    )
    assert isinstance(bye, Request)
    found = edited_lines(bye, CORE._config.needs_index)
    assert found is not None
    assert found_routes(CORE._config, bye, found)[0] == 2
    ctx = Context(CORE._config, CORE._state, bye, CLIENT, LOCAL, None, NOW, CLIENT.host, False)
    out = write_request(ctx, Admitted(Cause.IN_DIALOG, Info()), LOCAL, 70)
    assert b"Route:" not in out
    assert bye._index is None  # written without the header index


VIA_PARAMS = [
    "branch=z9hG4bK-1",
    "rport",
    "RPORT",
    "rport=5999",
    "Rport=1",
    "received=10.1.1.1",
    "RECEIVED=1.2.3.4",
    "x=1",
    "maddr=[::1]",
    'x="a;b"',
    "ttl=5",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    host=st.sampled_from(["127.0.0.1", "10.0.0.1:5061", "client.example.com"]),
    params=st.lists(st.sampled_from(VIA_PARAMS), max_size=4),
    tail=st.sampled_from(["", ", SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-2", " ,SIP/2.0/TCP h;x"]),
    extra=st.lists(EXTRA, max_size=2),
)
def test_received_and_rport_on_the_fast_path_as_the_old_writer(
    host: str, params: list[str], tail: str, extra: list[str]
) -> None:
    """The top Via's received/rport set on the parser's fast path (its value split on `;`)
    give the bytes of the edit-by-edit writer, whatever the parameters' case and order."""
    via = f"SIP/2.0/UDP {host}" + "".join(";" + p for p in params) + tail
    data = "\r\n".join(
        [
            "INVITE sip:bot@127.0.0.1:5060 SIP/2.0",
            f"Via: {via}",
            "From: <sip:alice@127.0.0.1>;tag=f-1",
            "To: <sip:bot@127.0.0.1>",
            "Call-ID: c-1@client",
            "CSeq: 1 INVITE",
            *extra,
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    compare(data)  # the old forward path's bytes, from every source, listener and verdict
