"""The parser's fast path against its general path: for every corpus message, fuzz seed and
mutation, both accept the same messages with the same values and refuse the same ones with the
same status."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.sip import Message, ParserLimits, Request, Response, parse_message
from sipguard.sip.parser import parse_message_general
from tests.conftest import CORPORA

FILES: list[Path] = sorted(
    p
    for folder in ("rfc4475", "rfc5118/wire", "fuzz-seeds")
    for p in (CORPORA / folder).rglob("*")
    if p.is_file() and p.suffix != ".md"
)
CORPUS = [p.read_bytes() for p in FILES]

BASE = (
    b"INVITE sip:+15551234567@sip.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.org>;tag=1928301774\r\n'
    b"To: <sip:+15551234567@sip.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.org\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n\r\nv=0\r\n"
)
RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa;received=127.0.0.2\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKb, SIP/2.0/UDP h.example.com\r\n"
    b"From: <sip:a@example.org>;tag=1\r\nTo: Bob <sip:b@example.org>;tag=2\r\n"
    b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContact: <sip:b@192.0.2.20>, <sip:c@h>;q=0.5\r\n"
    b"Content-Length: 0\r\n\r\n"
)
SAMPLES = [BASE, RESPONSE, BASE.replace(b"Max-Forwards: 70\r\n", b"")]


def _item(value: Any) -> Any:
    attrs = ("raw", "display_name", "uri_raw", "params", "tag", "protocol", "transport", "host",
             "port", "branch", "received", "has_rport", "rport", "sent_by")  # fmt: skip
    out = []
    for attr in attrs:
        try:
            out.append(getattr(value, attr, None))
        except ParseError as error:
            out.append(("error", error.status))
    with contextlib.suppress(AttributeError):
        try:
            out.append(value.uri)
        except ParseError as error:
            out.append(("error", error.status))
    return tuple(out)


def snapshot(data: bytes, parse: Any) -> Any:
    try:
        msg: Message = parse(data)
    except ParseError as error:
        headers = error.headers
        return ("error", error.status, error.routable, headers)
    out: list[Any] = [type(msg).__name__, msg.raw, msg.body, msg.start_line,
                      msg.start_line_end, msg.header_end]  # fmt: skip
    if isinstance(msg, Request):
        out += [msg.method, msg.uri]
    elif isinstance(msg, Response):
        out += [msg.status, msg.reason]
    for name in ("top_via", "from_", "to", "call_id", "cseq", "max_forwards", "vias",
                 "contacts", "routes", "record_routes", "is_contact_wildcard", "headers",
                 "content_length", "user_agent"):  # fmt: skip
        try:
            value = getattr(msg, name)
        except ParseError as error:
            out.append(("error", error.status))
            continue
        if isinstance(value, list):
            out.append([_item(v) for v in value])
        elif hasattr(value, "raw") and not isinstance(value, tuple):
            out.append(_item(value))
        else:
            out.append(value)
    for key in (b"via", b"contact", b"route", b"allow", b"x-unknown", b"call-id"):
        out.append((msg.get(key), msg.get_all(key), msg.indices(key), key in msg))
    return out


def check(data: bytes) -> None:
    assert snapshot(data, parse_message) == snapshot(data, parse_message_general)


@pytest.mark.parametrize("data", CORPUS + SAMPLES, ids=[p.name for p in FILES] + ["s1", "s2", "s3"])
def test_fast_path_matches_general_path(data: bytes) -> None:
    check(data)


def test_fast_path_taken_for_common_messages() -> None:
    for data in SAMPLES:
        assert parse_message(data).fast_match is not None


EDITS = st.sampled_from(
    [b"\r\n", b":", b";", b",", b"<", b">", b'"', b"\\", b" ", b"\t", b"=", b"@", b"[", b"]",
     b"%", b"\x00", b"\n", b"\r", b"sip:", b"SIP/2.0", b"Via: ", b"v: ", b"To: ", b"t: ",
     b"From: ", b"CSeq: ", b"Call-ID: ", b"Contact: ", b"Max-Forwards: ", b"Content-Length: ",
     b"0", b"9999", b";branch=", b";BRANCH=x", b";rport=", b";rport=70000", b"tag=", b"*",
     b"4294967296", b"INVITE", b"sips:", b"tel:", b"SIP/2.0/TCP ", b"\xc3\xa9"]
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES + CORPUS[:40])))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 2))
        if op == 0:
            data[pos:pos] = draw(EDITS)
        elif op == 1:
            end = draw(st.integers(pos, min(len(data), pos + 12)))
            del data[pos:end]
        elif pos < len(data):
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


@settings(
    max_examples=int(__import__("os").environ.get("SIP_PROP_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated())
def test_mutations_fast_path_matches_general_path(data: bytes) -> None:
    check(data)


def _padded(size: int) -> bytes:
    """BASE with an X-Pad header making the header section (start line to the empty line
    included) exactly `size` bytes."""
    head, _, body = BASE.partition(b"\r\n\r\n")
    room = size - len(head) - 4 - len(b"\r\nX-Pad: ")
    return head + b"\r\nX-Pad: " + b"a" * room + b"\r\n\r\n" + body


@pytest.mark.parametrize("delta", [-1, 0, 1])
@pytest.mark.parametrize(
    "limits",
    [
        ParserLimits(max_uri_bytes=600),
        ParserLimits(max_line_bytes=600),
        ParserLimits(max_headers=150),
        ParserLimits(max_uri_bytes=40),  # the Request-URI itself is too long: 414
        ParserLimits(max_line_bytes=60),  # the Via line is too long: 513
        ParserLimits(max_headers=5),  # 513
    ],
)
def test_fast_path_near_limits(limits: ParserLimits, delta: int) -> None:
    """Around `fast_path_bytes` the fast path hands over to the general parser, which measures
    lines, URIs and header count: both give the same answer at the limit -1, 0 and +1."""
    data = _padded(limits.fast_path_bytes + delta)
    assert snapshot(data, lambda d: parse_message(d, limits)) == snapshot(
        data, lambda d: parse_message_general(d, limits)
    )
    if limits.max_uri_bytes > 40 and limits.max_line_bytes > 60 and limits.max_headers > 5:
        assert (parse_message(data, limits).fast_match is not None) == (delta <= 0)
