"""`Message.second_via`, `Message.top_via_cut` and `edit.without_top_via` (the response relay's
reading of the two top Vias and removal of ours) against the full readings they shortcut:
`vias[1]` and `Edits(msg).remove_top_via().build()`, on the corpora, on Via layouts built here
and on mutations of them; and `params.via_param_spans` and `lists.list_spans` against reading
the parameters and the list elements one by one."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.sip import Edits, parse_message, without_top_via
from sipguard.sip.lists import _LIST_ITEM_RE, list_spans, split_list
from sipguard.sip.params import _PARAM_RE, _VIA_HEAD_RE, via_param_spans
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
    # a quoted-pair NUL (RFC 3261 §25.1, as in RFC 4475 intmeth) in the Via below ours: both
    # readings copy it as received (the editor refused it, hypothesis found)
    b"Via: " + V1 + b', SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc;x="\\\x00a,b"\r\n',
    b"Via: " + V1 + b'\r\nVia: SIP/2.0/UDP 192.0.2.1;x="\\\x00"\r\n',
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
        assert msg.fast_match is not None
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


def _param_spans_one_by_one(element: bytes) -> tuple[int, list[tuple[bytes, int, int]]]:
    """The reference reading of `via_param_spans`: one parameter match at a time."""
    m = _VIA_HEAD_RE.match(element)
    if m is None:
        raise ParseError("malformed Via")
    pos = head_end = m.end()
    spans = []
    while pos < len(element):
        p = _PARAM_RE.match(element, pos)
        if p is None:
            break
        spans.append((p.group(1).lower(), pos, p.end()))
        pos = p.end()
    return head_end, spans


PARAM_PIECES = st.sampled_from(
    [b";", b"branch", b"=", b"z9hG4bK1", b"RPort", b" ", b"\t", b'"a;b=c"', b"[::1]", b",",
     b"received", b"1.2.3.4", b"x", b"==", b"%"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(PARAM_PIECES, max_size=12))
def test_via_param_spans_match_one_by_one_reading(pieces: list[bytes]) -> None:
    element = b"SIP/2.0/UDP host.example:5060" + b"".join(pieces)
    assert via_param_spans(element) == _param_spans_one_by_one(element)


@pytest.mark.parametrize("data", MESSAGES + SAMPLES + CORPUS)
def test_via_param_spans_of_corpus_vias(data: bytes) -> None:
    try:
        vias = parse_message_general(data).vias
    except ParseError:
        return
    for via in vias:
        assert via_param_spans(via.raw) == _param_spans_one_by_one(via.raw)


def _spans_one_by_one(value: bytes) -> list[tuple[int, int]] | str:
    """The reference reading of a comma list: one element match at a time."""
    if not value:
        return []
    spans, pos = [], 0
    while True:
        m = _LIST_ITEM_RE.match(value, pos)
        if m is None:
            return "error"
        s, e = m.span()
        part = value[s:e]
        if not part.strip(b" \t"):
            return "error"
        lead = s + len(part) - len(part.lstrip(b" \t"))
        spans.append((lead, lead + len(part.strip(b" \t"))))
        if e >= len(value):
            return spans
        if value[e : e + 1] != b"," or e + 1 >= len(value):
            return "error"
        pos = e + 1


LIST_PIECES = st.sampled_from(
    [b",", b" ", b"\t", b"<sip:a@h;lr>", b'"A, B"', b'"x\\"y"', b"a", b"<", b">", b'"', b";q=1",
     b"\\", b"sip:b@h"]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(LIST_PIECES, max_size=10))
def test_list_spans_match_one_by_one_reading(pieces: list[bytes]) -> None:
    value = b"".join(pieces)
    try:
        spans: list[tuple[int, int]] | str = list_spans(value)
    except ParseError:
        spans = "error"
    assert spans == _spans_one_by_one(value)
    if isinstance(spans, list):
        assert split_list(value) == [value[s:e] for s, e in spans]
