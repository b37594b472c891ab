"""Relaying a response: the cut of its top Via and the two values it is checked by, against the
general reading they replaced (issue 13).

`via.relay_vias` reads the top two Via values and the cut removing the top one from the
parser's fast-path match; the reference is the Via list parsed in full (`msg.vias`) and the
header-line editor (`Edits.remove_top_via`). They must agree on every response of the corpora
and on generated responses: Via values on one line or several, comma lists spaced in any way, a
quoted parameter holding a comma, compact and other-case names (the general path).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Cause, Forward
from sipguard.proxy.via import relay_vias
from sipguard.settings import Trunk
from sipguard.sip import Edits, Response, build_response, parse_message
from tests.conftest import CORPORA
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, UPSTREAM, core, forwarded, request
from tests.unit.proxy.playbook import settings as make_settings


def relayed_bytes(msg: Response) -> bytes:
    vias = relay_vias(msg)
    if vias.start < 0:
        return Edits(msg).remove_top_via().build()
    return msg.raw[: vias.start] + vias.head + msg.raw[vias.end :]


def agree(data: bytes) -> bool:
    """The fast reading and the general one agree on `data`; False when it is no response or
    the general reading refuses it."""
    try:
        msg = parse_message(data)
        if not isinstance(msg, Response):
            return False
        reference = msg.vias[:2]
        expected = Edits(msg).remove_top_via().build()
    except ParseError:
        return False
    vias = relay_vias(msg)
    assert vias.top.raw == reference[0].raw
    assert vias.top.branch == reference[0].branch
    if len(reference) > 1:
        assert vias.below is not None
        assert vias.below.raw == reference[1].raw
        below = reference[1]
        assert (vias.below.branch, vias.below.sent_by) == (below.branch, below.sent_by)
    else:
        assert vias.below is None
    assert relayed_bytes(msg) == expected
    return True


def test_corpora_responses_agree() -> None:
    folders = [Path(CORPORA, "rfc4475"), Path(CORPORA, "rfc5118", "wire")]
    corpus = [f.read_bytes() for folder in folders for f in sorted(folder.glob("*.dat"))]
    assert sum(agree(data) for data in corpus) >= 3  # the responses among them


VALUES = [
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsg0123;rport=5061;sgf=udp-127.0.0.1-5061",
    "SIP/2.0/UDP 10.0.0.1:5061;branch=z9hG4bK-1;rport",
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1",
    "SIP/2.0/TCP Client.Example.com:5061;branch=z9hG4bK-1;received=10.1.1.1;rport=5999",
    "SIP/2.0/UDP [::1]:5062;branch=z9hG4bK-1;RPORT",
    'SIP/2.0/UDP 127.0.0.1:5061;branch=1;rport;x="a, b"',
    "SIP/2.0/udp 127.0.0.1:5061 ; branch=z9hG4bK-2",
]
SEPARATORS = [", ", ",", " , ", "\t,\t"]
NAMES = ["Via: ", "Via:", "Via:  ", "Via:\t", "v: ", "VIA: "]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from(NAMES),
            st.lists(st.sampled_from(VALUES), min_size=1, max_size=3),
            st.sampled_from(SEPARATORS),
        ),
        min_size=1,
        max_size=3,
    ),
    between=st.booleans(),
)
def test_generated_responses_agree(lines: list[tuple[str, list[str], str]], between: bool) -> None:
    via_lines = [name + separator.join(values) for name, values, separator in lines]
    if between:  # another header between two Via lines
        via_lines.insert(1, "Subject: Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK-x")
    data = "\r\n".join(
        [
            "SIP/2.0 200 OK",
            *via_lines,
            "From: <sip:alice@127.0.0.1>;tag=f-1",
            "To: <sip:bot@127.0.0.1>;tag=t-1",
            "Call-ID: c-1@client",
            "CSeq: 1 INVITE",
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    agree(data)


def _one_line(data: bytes) -> bytes:
    """The response with its Via lines joined into one comma list (as SIPp echoes them)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    vias = [line[5:] for line in lines if line.startswith(b"Via: ")]
    others = [line for line in lines if not line.startswith(b"Via: ")]
    joined = [others[0], b"Via: " + b", ".join(vias), *others[1:]]
    return b"\r\n".join(joined) + b"\r\n\r\n" + body


def test_response_with_a_comma_list_via_is_relayed_to_the_client() -> None:
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    for data in (build_response(sent, 200, b"OK", to_tag=b"callee-1"),):
        for shape in (data, _one_line(data)):
            msg = parse_message(shape)
            assert isinstance(msg, Response) and msg.matched_span("via") is not None
            (action,) = proxy.handle(shape, UPSTREAM, LOCAL, None, NOW)
            assert isinstance(action, Forward) and action.cause is Cause.RESPONSE
            assert action.to == CLIENT
            assert action.data == Edits(msg).remove_top_via().build()
            assert b"sgf=" not in action.data


def test_comma_list_with_a_forged_top_via_is_stray() -> None:
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    data = _one_line(build_response(sent, 200, b"OK", to_tag=b"callee-1"))
    forged = data.replace(b"branch=z9hG4bKsg", b"branch=z9hG4bKsgf", 1)
    (action,) = proxy.handle(forged, UPSTREAM, LOCAL, None, NOW)
    assert action.cause is Cause.STRAY
