"""A request from the upstream, written once (issue 13) against the edit-by-edit writer it
replaced: on the parser's fast path from the match and one scan for its Route and Record-Route
lines, else edit by edit. `edited` below is the path as it was; `forwarding.from_upstream` must
give the same bytes for generated requests (Route entries naming us or not, our own Record-Route
values, Record-Route and Max-Forwards present or not, Via anywhere, general-path spellings).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.proxy.actions import Address, Forward
from sipguard.proxy.context import Context
from sipguard.proxy.forwarding import DIALOG_CREATING, from_upstream, our_routes
from sipguard.proxy.via import branch_for
from sipguard.sip import Edits, Request, parse_message
from tests.unit.proxy.playbook import LOCAL, NOW, UPSTREAM
from tests.unit.proxy.test_outgoing import CORE, record_routes, via_value_with_flow


def edited(ctx: Context, destination: Address, out_local: Address) -> bytes:
    """The request from the upstream as it was written before issue 13, edit by edit."""
    msg, cfg, st = ctx.msg, ctx.cfg, ctx.st
    popped, _hint = our_routes(cfg, msg)
    edits = Edits(msg)
    for _ in range(popped):
        edits.remove_first_route()
    if msg.method != b"ACK":
        edits.replace_max_forwards(msg.max_forwards - 1)
    if msg.method in DIALOG_CREATING and not msg.to.tag:
        edits.insert_headers(record_routes(b"Record-Route", ctx.local, out_local, destination))
    edits.prepend_via(
        via_value_with_flow(out_local, branch_for(st.branch_key, msg, ctx.source), ctx.source)
    )
    return edits.build()


ROUTES = [
    "Route: <sip:127.0.0.1:5060;transport=udp;lr;sgf=udp-127.0.0.1-5061>",
    "Route: <sip:127.0.0.1:5060;transport=tcp;lr>, <sip:127.0.0.1:5060;lr;sgf=tcp-127.0.0.9-4000>",
    "Route: <sip:127.0.0.1:5060;lr>",
    "Route: <sip:127.0.0.1:5061;lr>",
    "route: <sip:127.0.0.1:5060;transport=udp;lr;sgf=udp-127.0.0.1-5061>",
]
EXTRA = [
    "Record-Route: <sip:10.9.9.9;lr>",
    "Max-Forwards: 9",
    "Max-Forwards: 70",
    "Via: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-3",
    "Subject: folded\r\n  over two lines",
    "v: SIP/2.0/UDP 10.0.0.4;branch=z9hG4bK-4",
    "Contact: <sip:pbx@127.0.0.1:5070>",
    'Proxy-Authorization: Digest username="a", realm="r", nonce="n"',
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["INVITE", "BYE", "ACK", "CANCEL", "OPTIONS", "SUBSCRIBE"]),
    routes=st.lists(st.sampled_from(ROUTES), max_size=2),
    before=st.lists(st.sampled_from(EXTRA), max_size=2),
    after=st.lists(st.sampled_from(EXTRA), max_size=2),
    via_first=st.booleans(),
    to_tag=st.booleans(),
)
def test_requests_from_the_upstream_as_the_old_writer(
    method: str,
    routes: list[str],
    before: list[str],
    after: list[str],
    via_first: bool,
    to_tag: bool,
) -> None:
    via = "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-up-1;rport"
    head = [via, *routes, *before] if via_first else [*routes, *before, via]
    data = "\r\n".join(
        [
            f"{method} sip:alice@127.0.0.1:5061 SIP/2.0",
            *head,
            "From: <sip:bot@127.0.0.1>;tag=u-1",
            "To: <sip:alice@127.0.0.1>" + (";tag=a-1" if to_tag else ""),
            "Call-ID: up-1@pbx",
            f"CSeq: 1 {method}",
            *after,
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    try:
        msg = parse_message(data, CORE.parser_limits)
        assert isinstance(msg, Request)
        ctx = Context(CORE._config, CORE._state, msg, UPSTREAM, LOCAL, None, NOW, "", False)
        sent = from_upstream(ctx)[-1]
        if not isinstance(sent, Forward):
            return  # answered ourselves (404, 483): nothing written
        assert sent.local is not None
        expected = edited(ctx, sent.to, sent.local)
    except ParseError:
        return  # a malformed header read on demand: refused on both paths alike
    assert sent.data == expected


def test_bye_from_the_upstream_is_written_without_the_header_index() -> None:
    data = (
        b"BYE sip:alice@127.0.0.1:5061 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-up-2;rport\r\n"
        b"Route: <sip:127.0.0.1:5060;transport=udp;lr;sgf=udp-127.0.0.1-5061>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:bot@127.0.0.1>;tag=u-1\r\n"
        b"To: <sip:alice@127.0.0.1>;tag=a-1\r\n"
        b"Call-ID: up-2@pbx\r\n"
        b"CSeq: 2 BYE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(data, CORE.parser_limits)
    assert isinstance(msg, Request)
    ctx = Context(CORE._config, CORE._state, msg, UPSTREAM, LOCAL, None, NOW, "", False)
    sent = from_upstream(ctx)[-1]
    assert isinstance(sent, Forward)
    assert sent.to == Address(LOCAL.transport, "127.0.0.1", 5061)  # the flow in our Route
    assert b"Route:" not in sent.data and b"Max-Forwards: 69\r\n" in sent.data
    assert msg._index is None
    assert sent.local is not None
    assert sent.data == edited(ctx, sent.to, sent.local)
