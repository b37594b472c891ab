"""`Message.second_via`, `Message.top_via_cut` and `edit.without_top_via` (the response relay's
reading of the two top Vias and removal of ours) against the full readings they shortcut:
`vias[1]` and `Edits(msg).remove_top_via().build()`, on the corpora, on Via layouts built here
and on mutations of them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.sip import Edits, parse_message, without_top_via
from sipguard.sip.parser import parse_message_general
from tests.unit.sip.test_fast_path import CORPUS, EDITS, SAMPLES

HEAD = b"SIP/2.0 200 OK\r\n"
TAIL = (
    b"From: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.org>;tag=2\r\nCall-ID: x\r\n"
    b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)
V1 = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa;rport=5062;sgf=abc"
V2 = b'SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKb;x="a,b"'
V3 = b"SIP/2.0/UDP h.example.com"
LAYOUTS = [
    b"Via: " + V1 + b"\r\n",
    b"Via: " + V1 + b"\r\nVia: " + V2 + b"\r\n",
    b"Via: " + V1 + b", " + V2 + b"\r\n",
    b"Via: " + V1 + b" ,\t" + V2 + b",  " + V3 + b"\r\n",
    b"Via:" + V1 + b"," + V2 + b"\r\n",
    b"Via:  " + V1 + b"\r\nVia: " + V2 + b", " + V3 + b"\r\n",
    b"Via: " + V1 + b"\r\nX-Via: " + V3 + b"\r\nVia-Foo: 1\r\nVia: " + V2 + b"\r\n",
    b"v: " + V1 + b", " + V2 + b"\r\n",
    b"Via: " + V1 + b",\r\n " + V2 + b"\r\n",
]
MESSAGES = [HEAD + layout + TAIL for layout in LAYOUTS]


def check(data: bytes) -> None:
    for parse in (parse_message, parse_message_general):
        try:
            msg = parse(data)
        except ParseError:
            return
        vias = msg.vias
        second = msg.second_via
        assert (second is None) == (len(vias) == 1)
        if second is not None:
            assert second.raw == vias[1].raw
            assert second.params == vias[1].params
        assert without_top_via(msg) == Edits(msg).remove_top_via().build()


@pytest.mark.parametrize("data", MESSAGES + SAMPLES + CORPUS)
def test_second_via_and_cut_match_full_reading(data: bytes) -> None:
    check(data)


def test_fast_path_layouts_are_cut_without_index() -> None:
    for data in MESSAGES[:7]:
        msg = parse_message(data)
        assert msg._fast is not None
        assert msg.top_via_cut() is not None or not data.startswith(HEAD + b"Via: ")
        assert msg.second_via is None or msg._index is None  # nothing built the index
    msg = parse_message(MESSAGES[2])
    assert msg.second_via is not None and msg.second_via.branch == b"z9hG4bKb"
    assert msg.second_via.param(b"x") == b'"a,b"'


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(MESSAGES + SAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data[pos:pos] = draw(EDITS)
        else:
            del data[pos : draw(st.integers(pos, min(len(data), pos + 8)))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_second_via_and_cut_match_full_reading(data: bytes) -> None:
    check(data)
