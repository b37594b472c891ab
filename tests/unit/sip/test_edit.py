"""Minimal byte edits and reply building: untouched header bytes never change."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

import pytest

from sipguard.errors import ParseError
from sipguard.sip import (
    Edits,
    Header,
    Message,
    Request,
    apply_edits,
    build_error_response,
    build_response,
    parse_message,
)
from tests.conftest import CORPORA

REQ = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;rport , "
    b"SIP/2.0/TCP b.example;branch=z9hG4bKb\r\n"
    b"Via: SIP/2.0/UDP c.example;branch=z9hG4bKc\r\n"
    b"Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n"
    b"Route: <sip:p3.example;lr>\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=a\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: e1@h\r\n"
    b"CSeq: 1 INVITE\r\n"
    b'Authorization: Digest username="a", realm="ours", nonce="n", uri="sip:b@h", response="r"\r\n'
    b'Authorization: Digest username="a", realm="them", nonce="n", uri="sip:b@h", response="x"\r\n'
    b"P-Asserted-Identity: <sip:evil@x>\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)  # fmt: skip


# One-call forms of the edits (one pass each), as the proxy used them before it wrote its
# forwarded requests in one plan (issue 13); here they only exercise `Edits`.
def prepend_via(msg: Message, value: bytes) -> bytes:
    return Edits(msg).prepend_via(value).build()


def set_top_via_params(msg: Message, params: Sequence[tuple[bytes, bytes | None]]) -> bytes:
    return Edits(msg).set_top_via_params(params).build()


def remove_top_via(msg: Message) -> bytes:
    return Edits(msg).remove_top_via().build()


def remove_first_route(msg: Message) -> bytes:
    return Edits(msg).remove_first_route().build()


def replace_max_forwards(msg: Message, n: int) -> bytes:
    return Edits(msg).replace_max_forwards(n).build()


def insert_headers(msg: Message, lines: Sequence[tuple[bytes, bytes]]) -> bytes:
    return Edits(msg).insert_headers(lines).build()


def remove_headers(msg: Message, keys: Collection[bytes]) -> bytes:
    return Edits(msg).remove_headers(keys).build()


def remove_header_lines(msg: Message, indices: Iterable[int]) -> bytes:
    return Edits(msg).remove_header_lines(indices).build()


def remove_header_lines_if(msg: Message, predicate: Callable[[Header], bool]) -> bytes:
    return Edits(msg).remove_header_lines_if(predicate).build()


# --- replies ---


def msg() -> Request:
    m = parse_message(REQ)
    assert isinstance(m, Request)
    return m


def untouched_lines_kept(before: bytes, after: bytes, touched: set[bytes]) -> None:
    """Every header line of `before` not naming a touched key is in `after`, in order."""
    b = parse_message(before)
    a_raw = parse_message(after).raw
    pos = 0
    for h in b.headers:
        if h.key in touched:
            continue
        line = b.raw[h.start : h.end]
        found = a_raw.find(line, pos)
        assert found >= 0, line
        pos = found + len(line)


def test_apply_edits_primitive() -> None:
    m = msg()
    out = apply_edits(
        m, drop={11}, replace={4: b"Max-Forwards: 9"}, insert={0: [b"X-A: 1"], 14: [b"X-Z: 2"]}
    )
    new = parse_message(out)
    assert new.max_forwards == 9
    assert new.headers[0].name == b"X-A"
    assert new.get(b"x-z") == b"2" and new.headers[-1].key == b"x-z"
    assert new.body == b"hello"
    assert new.get(b"p-asserted-identity") is None  # index 11 dropped


def test_apply_edits_rejects_injection() -> None:
    with pytest.raises(ValueError):
        apply_edits(msg(), insert={0: [b"X: a\r\nEvil: b"]})
    with pytest.raises(IndexError):
        apply_edits(msg(), drop={99})


def test_prepend_via() -> None:
    out = prepend_via(msg(), b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours")
    new = parse_message(out)
    assert new.top_via.branch == b"z9hG4bKours"
    assert [v.branch for v in new.vias][1:] == [b"z9hG4bKa", b"z9hG4bKb", b"z9hG4bKc"]
    assert out.startswith(b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1")
    assert out.endswith(REQ[REQ.index(b"via:") :])


def test_set_top_via_params_first_of_comma_list() -> None:
    out = set_top_via_params(msg(), [(b"received", b"203.0.113.5"), (b"rport", b"4000")])
    new = parse_message(out)
    top = new.top_via
    assert top.received == b"203.0.113.5" and top.rport == 4000
    assert top.branch == b"z9hG4bKa"
    assert new.vias[1].raw == b"SIP/2.0/TCP b.example;branch=z9hG4bKb"
    assert b"branch=z9hG4bKa;rport=4000;received=203.0.113.5 , SIP/2.0/TCP" in out
    untouched_lines_kept(REQ, out, {b"via"})


def test_set_top_via_params_replaces_existing() -> None:
    once = parse_message(set_top_via_params(msg(), [(b"received", b"1.1.1.1")]))
    twice = set_top_via_params(once, [(b"received", b"2001:db8::1")])
    assert parse_message(twice).top_via.received == b"2001:db8::1"
    assert twice.count(b"received=") == 1


def test_set_top_via_params_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        set_top_via_params(msg(), [(b"received", b"1.1.1.1;evil")])


def test_remove_top_via_from_comma_list() -> None:
    m = msg()
    out = remove_top_via(m)
    new = parse_message(out)
    assert [v.branch for v in new.vias] == [b"z9hG4bKb", b"z9hG4bKc"]
    untouched_lines_kept(REQ, out, {b"via"})
    out2 = remove_top_via(new)
    assert [v.branch for v in parse_message(out2).vias] == [b"z9hG4bKc"]
    assert b"Via: SIP/2.0/UDP c.example;branch=z9hG4bKc\r\n" in out2


def test_remove_first_route() -> None:
    out = remove_first_route(msg())
    new = parse_message(out)
    assert [r.uri.host for r in new.routes] == [b"p2.example", b"p3.example"]
    out = remove_first_route(new)
    out = remove_first_route(parse_message(out))
    assert parse_message(out).routes == []


def test_replace_max_forwards() -> None:
    out = replace_max_forwards(msg(), 69)
    assert parse_message(out).max_forwards == 69
    assert out.replace(b"Max-Forwards: 69", b"Max-Forwards: 70") == REQ
    stripped = parse_message(remove_headers(msg(), [b"max-forwards"]))
    added = parse_message(replace_max_forwards(stripped, 70))
    assert added.get(b"max-forwards") == b"70"
    with pytest.raises(ValueError):
        replace_max_forwards(msg(), 256)


def test_insert_headers_placement() -> None:
    out = insert_headers(msg(), [(b"Record-Route", b"<sip:us;lr>"), (b"Route", b"<sip:x;lr>")])
    new = parse_message(out)
    assert new.headers[0].name == b"Record-Route"  # none before: right after the start line
    route_idx = new.indices(b"route")
    assert new.headers[route_idx[0]].value == b"<sip:x;lr>"  # before the first Route
    untouched_lines_kept(REQ, out, set())


def test_remove_headers_every_spelling() -> None:
    data = REQ.replace(b"Content-Type: text/plain", b"c: text/plain\r\nCONTENT-TYPE: x/y")
    out = remove_headers(parse_message(data), [b"content-type", b"P-Asserted-Identity"])
    new = parse_message(out)
    assert new.get(b"content-type") is None and new.get(b"p-asserted-identity") is None
    assert new.body == b"hello"


def test_remove_header_lines_by_predicate() -> None:
    def ours(h: object) -> bool:
        return getattr(h, "key", None) == b"authorization" and b'realm="ours"' in getattr(
            h, "value", b""
        )

    out = remove_header_lines_if(msg(), ours)
    assert parse_message(out).get_all(b"authorization") == [
        msg().headers[msg().indices(b"authorization")[1]].value
    ]
    out2 = remove_header_lines(msg(), [msg().indices(b"authorization")[0]])
    assert out2 == out


def test_combined_edits_one_pass() -> None:
    m = msg()
    edits = (
        Edits(m)
        .set_top_via_params([(b"received", b"203.0.113.5")])
        .prepend_via(b"SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKus")
        .remove_first_route()
        .replace_max_forwards(m.max_forwards - 1)
        .insert_headers([(b"Record-Route", b"<sip:127.0.0.1;lr>")])
        .remove_headers([b"p-asserted-identity"])
        .remove_header_lines_if(lambda h: h.key == b"authorization" and b"ours" in h.value)
    )
    new = parse_message(edits.build())
    assert [v.branch for v in new.vias] == [b"z9hG4bKus", b"z9hG4bKa", b"z9hG4bKb", b"z9hG4bKc"]
    assert new.vias[1].received == b"203.0.113.5"
    assert new.max_forwards == 69
    assert [r.uri.host for r in new.routes] == [b"p2.example", b"p3.example"]
    assert new.record_routes[0].uri.host == b"127.0.0.1"
    assert new.get(b"p-asserted-identity") is None
    assert len(new.get_all(b"authorization")) == 1
    assert new.body == b"hello"


def test_edit_of_folded_message() -> None:
    data = (CORPORA / "rfc4475" / "wsinv.dat").read_bytes()
    m = parse_message(data)
    out = Edits(m).set_top_via_params([(b"received", b"1.2.3.4")]).replace_max_forwards(67).build()
    new = parse_message(out)
    assert new.top_via.received == b"1.2.3.4"
    assert new.max_forwards == 67
    assert new.body == m.body
    untouched_lines_kept(data, out, {b"via", b"max-forwards"})


# --- replies ---


def test_build_response() -> None:
    challenge = (b"Proxy-Authenticate", b'Digest realm="r", nonce="n"')
    out = build_response(
        msg(), 407, b"Proxy Authentication Required", to_tag=b"t1", extra_headers=[challenge]
    )
    resp = parse_message(out)
    assert resp.raw == out
    assert [v.branch for v in resp.vias] == [b"z9hG4bKa", b"z9hG4bKb", b"z9hG4bKc"]
    assert resp.to.tag == b"t1"
    assert resp.from_.tag == b"a"
    assert resp.call_id == b"e1@h" and resp.cseq.method == b"INVITE"
    assert resp.get(b"content-length") == b"0"
    assert out.startswith(b"SIP/2.0 407 Proxy Authentication Required\r\n")


def test_build_response_keeps_existing_to_tag() -> None:
    m = parse_message(REQ.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x"))
    assert isinstance(m, Request)
    assert parse_message(build_response(m, 200, b"OK", to_tag=b"t1")).to.tag == b"x"


def test_build_error_response() -> None:
    bad = REQ.replace(b"CSeq: 1 INVITE", b"CSeq: 1 OPTIONS")
    with pytest.raises(ParseError) as info:
        parse_message(bad)
    out = build_error_response(info.value, to_tag=b"e")
    assert out is not None
    resp = parse_message(out)
    assert resp.raw.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert resp.to.tag == b"e" and len(resp.vias) == 3


def test_build_error_response_for_response_is_none() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(b"SIP/2.0 4294967301 x\r\n" + REQ.split(b"\r\n", 1)[1])
    assert build_error_response(info.value) is None


def test_reason_injection_refused() -> None:
    with pytest.raises(ValueError):
        build_response(msg(), 200, b"OK\r\nEvil: 1", to_tag=None)
