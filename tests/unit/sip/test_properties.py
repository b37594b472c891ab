"""Hypothesis properties: the codec raises nothing but ParseError, and edits touch only what
they were asked to touch."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.sip import (
    Edits,
    Message,
    Request,
    StreamFramer,
    parse_credentials,
    parse_message,
    parse_uri,
)
from tests.conftest import CORPORA

CORPUS: list[bytes] = [
    p.read_bytes()
    for folder in ("rfc4475", "rfc5118/wire")
    for p in sorted((CORPORA / folder).glob("*.dat"))
]
VALID: list[Message] = []
for _data in CORPUS:
    with contextlib.suppress(ParseError):
        VALID.append(parse_message(_data))

SIP_BYTES = st.sampled_from(
    [b"\r\n", b":", b";", b",", b"<", b">", b'"', b"\\", b" ", b"\t", b"=", b"@", b"[", b"]",
     b"%", b"\x00", b"sip:", b"SIP/2.0", b"Via", b"v", b"l", b"Content-Length", b"0", b"9999"]
)  # fmt: skip

ACCESSORS = (
    "vias", "top_via", "call_id", "cseq", "from_", "to", "max_forwards", "content_length",
    "user_agent", "contacts", "routes", "record_routes", "headers", "body", "raw",
    "is_contact_wildcard",
)  # fmt: skip


def exercise(msg: Message) -> None:
    """Read every accessor; only ParseError may come out."""
    for name in ACCESSORS:
        with contextlib.suppress(ParseError):
            value = getattr(msg, name)
            if isinstance(value, list):
                for item in value:
                    for attr in ("params", "uri", "tag", "branch", "received", "rport"):
                        with contextlib.suppress(ParseError):
                            getattr(item, attr, None)
    for key in (b"via", b"contact", b"route", b"allow", b"authorization", b"x"):
        with contextlib.suppress(ParseError):
            msg.get_all(key)
    if isinstance(msg, Request):
        with contextlib.suppress(ParseError):
            msg.request_uri  # noqa: B018
    for value in msg.get_all(b"authorization"):
        with contextlib.suppress(ParseError):
            parse_credentials(value)


def try_parse(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except ParseError:
        return
    exercise(msg)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(SIP_BYTES)
        elif op == 2:
            end = draw(st.integers(pos, min(len(data), pos + 40)))
            del data[pos:end]
        else:
            data[pos:pos] = draw(st.binary(max_size=8))
    return bytes(data)


FAST = settings(
    max_examples=int(__import__("os").environ.get("SIP_PROP_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_parse_error(data: bytes) -> None:
    try_parse(data)


@FAST
@given(st.lists(SIP_BYTES | st.binary(max_size=4), max_size=60).map(b"".join))
def test_sip_like_bytes_only_parse_error(data: bytes) -> None:
    try_parse(b"INVITE sip:a@b SIP/2.0\r\n" + data)
    try_parse(data)


@FAST
@given(mutated())
def test_mutated_corpus_only_parse_error(data: bytes) -> None:
    try_parse(data)


@FAST
@given(mutated(), st.lists(st.integers(0, 2000), max_size=5))
def test_framer_only_parse_error(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer()
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    try:
        for a, b in itertools.pairwise(points):
            for frame in framer.feed(data[a:b]):
                if isinstance(frame, bytes):
                    try_parse(frame)
    except ParseError:
        pass


@FAST
@given(st.binary(max_size=200) | st.lists(SIP_BYTES, max_size=30).map(b"".join))
def test_uri_and_credentials_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_uri(b"sip:" + data)
    with contextlib.suppress(ParseError):
        parse_uri(data)
    with contextlib.suppress(ParseError):
        parse_credentials(b"Digest " + data)


def _lines(msg: Message) -> list[bytes]:
    return [msg.raw[h.start : h.end] for h in msg.headers]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(VALID),
    st.data(),
)
def test_edits_keep_untouched_headers(msg: Message, data: st.DataObject) -> None:
    count = len(msg.headers)
    drop = data.draw(st.sets(st.integers(0, count - 1), max_size=3))
    edits = Edits(msg)
    touched = set(drop)
    for i in drop:
        edits.drop(i)
    if data.draw(st.booleans()):
        edits.prepend_via(b"SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKprop")
    if data.draw(st.booleans()):
        edits.insert_headers([(b"Record-Route", b"<sip:127.0.0.1;lr>")])
    if data.draw(st.booleans()):
        with contextlib.suppress(ParseError):
            edits.set_top_via_params([(b"received", b"192.0.2.99"), (b"rport", b"1")])
            touched.update([i for i in msg.indices(b"via") if i not in drop][:1])
    if data.draw(st.booleans()):
        edits.replace_max_forwards(5)
        touched.update(msg.indices(b"max-forwards"))  # (single-value: at most one)
    if data.draw(st.booleans()):
        edits.remove_first_route()
        touched.update([i for i in msg.indices(b"route") if i not in drop][:1])
    out = edits.build()
    # every untouched header line survives byte for byte, in order; the body is identical
    lines = _lines(msg)
    pos = out.find(b"\r\n") + 2
    for i, line in enumerate(lines):
        if i in touched:
            continue
        found = out.find(line, pos)
        assert found >= 0
        pos = found + len(line)
    assert out.endswith(b"\r\n\r\n" + msg.body)
    assert out.split(b"\r\n", 1)[0] == msg.raw.split(b"\r\n", 1)[0]


def test_corpus_loaded() -> None:
    assert len(VALID) >= 35
    assert all(isinstance(p, Path) for p in [CORPORA])
