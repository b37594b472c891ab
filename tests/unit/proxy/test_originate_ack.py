"""`build_ack` and `build_cancel` read the INVITE's lines by key (`Message.get`, `line_values`),
no `Header` tuples: the same bytes as the header-tuple writer they replaced, on requests read on
either parser path (compact names, comma lists, several Route lines, folded lines)."""

from __future__ import annotations

import pytest

from sipguard.proxy.originate import build_ack, build_cancel
from sipguard.sip import Request, Response, parse_message


def reference(invite: Request, method: bytes, to_from: Request | Response) -> bytes:
    """`build_ack` / `build_cancel` as they were, through `Message.headers` and `indices` (kept
    as the reference); the To of `to_from`."""
    headers = invite.headers
    lines = [
        b"%s %s SIP/2.0" % (method, invite.uri),
        b"Via: " + headers[invite.indices(b"via")[0]].value.split(b",", 1)[0].strip(),
        b"Max-Forwards: 70",
        b"From: " + headers[invite.indices(b"from")[0]].value,
        b"To: " + to_from.headers[to_from.indices(b"to")[0]].value,
        b"Call-ID: " + invite.call_id,
        b"CSeq: %d %s" % (invite.cseq.number, method),
    ]
    lines.extend(b"Route: " + headers[i].value for i in invite.indices(b"route"))
    lines.extend((b"Content-Length: 0", b"", b""))
    return b"\r\n".join(lines)


VIA = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsgabc;rport"
INVITES = [
    # fast path, one Via, no Route
    b"Via: " + VIA + b"\r\nFrom: <sip:a@h>;tag=f1\r\nTo: <sip:b@h>\r\n",
    # a comma list on the Via line, two Route lines, one of them a list
    b"Via: " + VIA + b" , SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKx\r\n"
    b"Route: <sip:10.0.0.1;lr>, <sip:10.0.0.3;lr>\r\nRoute: <sip:10.0.0.4;lr>\r\n"
    b'From: "A" <sip:a@h>;tag=f1\r\nTo: <sip:b@h>\r\n',
    # compact names (general path)
    b"v: " + VIA + b"\r\nf: <sip:a@h>;tag=f2\r\nt: <sip:b@h>\r\n",
    # a folded From and Route (general path)
    b"Via: " + VIA + b"\r\nRoute: <sip:10.0.0.1;lr>,\r\n <sip:10.0.0.5;lr>\r\n"
    b"From: <sip:a@h>\r\n ;tag=f3\r\nTo: <sip:b@h>\r\n",
]


@pytest.mark.parametrize("lines", INVITES)
def test_build_ack_and_cancel_match_the_header_tuple_writer(lines: bytes) -> None:
    invite = parse_message(
        b"INVITE sip:b@127.0.0.1 SIP/2.0\r\n"
        + lines
        + b"Call-ID: c1\r\nCSeq: 7 INVITE\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(invite, Request)
    response = parse_message(
        b"SIP/2.0 503 Service Unavailable\r\nVia: " + VIA + b"\r\n"
        b"From: <sip:a@h>;tag=f1\r\nTo: <sip:b@h>\r\n  ;tag=up1\r\n"
        b"Call-ID: c1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(response, Response)
    ack = build_ack(invite, response)
    assert ack == reference(invite, b"ACK", response)
    assert build_cancel(invite) == reference(invite, b"CANCEL", invite)
    parsed = parse_message(ack)
    assert isinstance(parsed, Request) and parsed.method == b"ACK"
    assert parsed.to.tag == b"up1"
