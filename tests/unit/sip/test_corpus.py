"""Replay of the RFC 4475 and RFC 5118 torture messages and the fuzz seeds through the codec."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from sipguard.errors import ParseError, VersionNotSupported
from sipguard.sip import Request, Response, parse_message
from tests.conftest import CORPORA

RFC4475 = CORPORA / "rfc4475"
RFC5118 = CORPORA / "rfc5118" / "wire"

# valid, and "valid syntax, semantic error" (decided by the core, not the codec)
RFC4475_PARSE = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason", "badbranch", "unkscm", "novelsc", "unksm2",
    "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01", "cparam02", "regescrt",
    "sdp01", "inv2543",
    # pinned: a proxy that does not use Date ignores its time zone (RFC 4475 §3.1.2.12 allows)
    "baddate",
]  # fmt: skip
# (file, expected status); responses are never answered, the status is informative only
RFC4475_REJECT = [
    ("badinv01", 400), ("clerr", 400), ("ncl", 400), ("scalar02", 400), ("scalarlg", 400),
    ("quotbal", 400), ("ltgtruri", 400), ("lwsruri", 400), ("lwsstart", 400),
    ("trws", 400),  # pinned: trailing SP on the request line is rejected, not trimmed
    ("escruri", 400), ("regbadct", 400),
    ("badaspec", 400),  # pinned: no whitespace inside <addr-spec>
    ("baddn", 400),  # pinned: no empty line, and an unquoted display name with a comma
    ("badvers", 505), ("mismatch01", 400), ("mismatch02", 400), ("bigcode", 400),
    ("insuf", 400), ("multi01", 400), ("mcl01", 400),
]  # fmt: skip
RFC5118_PARSE = [
    "ipv6-good", "port-ambiguous", "port-unambiguous", "via-received-param-with-delim",
    "via-received-param-no-delim", "ipv6-in-sdp", "mult-ip-in-header", "mult-ip-in-sdp",
    "ipv4-mapped-ipv6", "ipv6-correct-abnf-2-colons",
]  # fmt: skip
RFC5118_REJECT = [
    "ipv6-bad",
    "ipv6-bug-abnf-3-colons",  # pinned: RFC 5954 corrected the ABNF; three colons are a 400
]
# requests whose 400 can still be answered (a response can be routed)
UNROUTABLE = {"insuf", "scalarlg", "bigcode"}


def load(path: Path) -> bytes:
    return path.read_bytes()


def test_classification_covers_the_corpus() -> None:
    names = {p.stem for p in RFC4475.glob("*.dat")}
    assert names == set(RFC4475_PARSE) | {n for n, _ in RFC4475_REJECT}
    names5118 = {p.stem for p in RFC5118.glob("*.dat")}
    assert names5118 == set(RFC5118_PARSE) | set(RFC5118_REJECT)


@pytest.mark.parametrize("name", RFC4475_PARSE)
def test_rfc4475_parses(name: str) -> None:
    msg = parse_message(load(RFC4475 / f"{name}.dat"))
    # every accessor works on every valid message
    assert msg.vias and msg.top_via.host
    assert msg.call_id
    assert msg.from_.uri.raw and msg.to.uri.raw
    assert msg.cseq.number >= 0
    assert 0 <= msg.max_forwards <= 255
    msg.contacts  # noqa: B018
    if isinstance(msg, Request):
        assert msg.request_uri.scheme
        assert msg.cseq.method == msg.method


@pytest.mark.parametrize(("name", "status"), RFC4475_REJECT)
def test_rfc4475_rejected(name: str, status: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(load(RFC4475 / f"{name}.dat"))
    assert info.value.status == status
    assert info.value.routable is (name not in UNROUTABLE)


@pytest.mark.parametrize("name", RFC5118_PARSE)
def test_rfc5118_parses(name: str) -> None:
    msg = parse_message(load(RFC5118 / f"{name}.dat"))
    assert msg.top_via.host


@pytest.mark.parametrize("name", RFC5118_REJECT)
def test_rfc5118_rejected(name: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(load(RFC5118 / f"{name}.dat"))
    assert info.value.status == 400
    assert info.value.routable


def test_rfc5118_archive_bytes_never_crash() -> None:
    for path in sorted((CORPORA / "rfc5118").glob("*.dat")):
        with contextlib.suppress(ParseError):
            parse_message(load(path))


def test_wsinv_fields() -> None:
    msg = parse_message(load(RFC4475 / "wsinv.dat"))
    assert isinstance(msg, Request)
    assert msg.method == b"INVITE"
    assert msg.uri == b"sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.call_id == b"wsinv.ndaksdj@192.0.2.1"
    assert msg.to.uri.raw == b"sip:vivekg@chair-dnrc.example.com"
    assert msg.to.tag == b"1918181833n"
    assert msg.from_.display_name == b'J Rosenberg \\\\\\"'
    assert msg.from_.uri.raw == b"sip:jdrosen@example.com"
    assert msg.from_.tag == b"98asjd8"
    assert msg.max_forwards == 68
    assert msg.cseq.number == 9 and msg.cseq.method == b"INVITE"
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        (b"UDP", b"192.0.2.2", b"390skdjuw"),
        (b"TCP", b"spindle.example.com", b"z9hG4bK9ikj8"),
        (b"UDP", b"192.168.255.111", b"z9hG4bK30239"),
    ]
    assert msg.get(b"subject") == b""
    assert msg.get(b"newfangledheader") == b"newfangled value continued newfangled value"
    assert msg.get(b"unknownheaderwithunusualvalue") == b";;,,;;,;"
    assert len(msg.body) == 150 == msg.content_length
    assert msg.body.startswith(b"v=0\r\n")
    (contact,) = msg.contacts
    assert contact.display_name == b'Quoted string \\"\\"'
    assert contact.params == ((b"newparam", b"newvalue"), (b"secondparam", None), (b"q", b"0.33"))
    (route,) = msg.routes
    assert route.uri.host == b"services.example.com"
    assert route.uri.has_param(b"lr")
    # names as received, keys canonical, order kept
    names = [h.name for h in msg.headers]
    assert names[:3] == [b"TO", b"from", b"MaX-fOrWaRdS"]
    assert msg.headers[0].key == b"to"
    assert [h.key for h in msg.headers if h.name == b"v"] == [b"via"]
    assert msg.raw == load(RFC4475 / "wsinv.dat")


def test_esc02_method_is_its_own() -> None:
    msg = parse_message(load(RFC4475 / "esc02.dat"))
    assert isinstance(msg, Request)
    assert msg.method == b"RE%47IST%45R"
    assert msg.method != b"REGISTER"
    assert msg.cseq.method == b"RE%47IST%45R"
    # `C%6Fntact` is an unknown header, not Contact
    assert len(msg.contacts) == 2
    assert msg.get(b"c%6fntact") == b"<sip:alias2@host2.example.com>"


def test_intmeth_bytes_kept() -> None:
    msg = parse_message(load(RFC4475 / "intmeth.dat"))
    assert isinstance(msg, Request)
    assert msg.method == b"!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.to.display_name == b"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"
    assert msg.request_uri.user == b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.request_uri.password == b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.call_id == b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.max_forwards == 255


def test_dblreq_yields_only_the_register() -> None:
    data = load(RFC4475 / "dblreq.dat")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.method == b"REGISTER"
    assert b"INVITE" not in msg.raw
    assert msg.body == b""
    assert data.startswith(msg.raw) and len(msg.raw) < len(data)


def test_semiuri_user_keeps_semicolon() -> None:
    msg = parse_message(load(RFC4475 / "semiuri.dat"))
    assert isinstance(msg, Request)
    assert msg.request_uri.user == b"user;par=u%40example.net"
    assert msg.request_uri.host == b"example.com"
    assert msg.request_uri.params == ()


def test_escnull_not_truncated() -> None:
    msg = parse_message(load(RFC4475 / "escnull.dat"))
    assert b"%00" in msg.to.uri.raw


def test_mpart01_binary_body() -> None:
    msg = parse_message(load(RFC4475 / "mpart01.dat"))
    assert len(msg.body) == 553
    assert b"\x00" in msg.body


def test_responses() -> None:
    msg = parse_message(load(RFC4475 / "noreason.dat"))
    assert isinstance(msg, Response)
    assert msg.status == 100 and msg.reason == b""
    msg = parse_message(load(RFC4475 / "unreason.dat"))
    assert isinstance(msg, Response) and msg.status == 200
    bcast = parse_message(load(RFC4475 / "bcast.dat"))
    assert isinstance(bcast, Response)


def test_transports_unknown_kept() -> None:
    msg = parse_message(load(RFC4475 / "transports.dat"))
    assert [v.transport for v in msg.vias] == [b"UDP", b"SCTP", b"TLS", b"UNKNOWN", b"TCP"]


def test_unknown_schemes_recorded() -> None:
    msg = parse_message(load(RFC4475 / "unkscm.dat"))
    assert isinstance(msg, Request)
    assert msg.request_uri.scheme == b"nobodyknowsthisscheme"
    assert not msg.request_uri.is_sip
    msg = parse_message(load(RFC4475 / "unksm2.dat"))
    assert not msg.to.uri.is_sip


def test_zeromf_parses_with_zero() -> None:
    assert parse_message(load(RFC4475 / "zeromf.dat")).max_forwards == 0


def test_cparam_contact_params() -> None:
    (c1,) = parse_message(load(RFC4475 / "cparam01.dat")).contacts
    assert c1.uri.params == () and c1.params
    (c2,) = parse_message(load(RFC4475 / "cparam02.dat")).contacts
    assert c2.uri.params and c2.params == ()


def test_regescrt_contact_uri_headers() -> None:
    (contact,) = parse_message(load(RFC4475 / "regescrt.dat")).contacts
    assert contact.uri.headers == ((b"Route", b"%3Csip:sip.example.com%3E"),)


def test_badvers_is_505_and_routable() -> None:
    with pytest.raises(VersionNotSupported) as info:
        parse_message(load(RFC4475 / "badvers.dat"))
    assert info.value.status == 505
    assert info.value.routable


def test_port_ambiguous() -> None:
    msg = parse_message(load(RFC5118 / "port-ambiguous.dat"))
    assert isinstance(msg, Request)
    assert msg.request_uri.host == b"2001:db8::10:5070"
    assert msg.request_uri.port is None


def test_port_unambiguous() -> None:
    msg = parse_message(load(RFC5118 / "port-unambiguous.dat"))
    assert isinstance(msg, Request)
    assert msg.request_uri.host == b"2001:db8::10"
    assert msg.request_uri.port == 5070


def test_via_received_ipv6_both_forms() -> None:
    a = parse_message(load(RFC5118 / "via-received-param-with-delim.dat")).top_via
    b = parse_message(load(RFC5118 / "via-received-param-no-delim.dat")).top_via
    assert a.received == b.received == b"2001:db8::9:255"


def test_ipv6_good_hosts_unbracketed() -> None:
    msg = parse_message(load(RFC5118 / "ipv6-good.dat"))
    assert isinstance(msg, Request)
    assert msg.request_uri.host == b"2001:db8::10"
    assert b"[" not in msg.top_via.host


def test_ipv6_bug_three_colons_rejected() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(load(RFC5118 / "ipv6-bug-abnf-3-colons.dat"))
    assert info.value.status == 400


def _fuzz_files() -> list[Path]:
    root = CORPORA / "fuzz-seeds"
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.name not in ("MANIFEST.tsv", "SOURCE.md")
    )


@pytest.mark.parametrize("path", _fuzz_files(), ids=lambda p: p.name)
def test_fuzz_seed_parses_or_parse_error(path: Path) -> None:
    data = path.read_bytes()
    try:
        msg = parse_message(data)
    except ParseError as error:
        assert 400 <= error.status <= 599
        return
    # a parsed message answers every accessor with a value or a ParseError
    for name in ("vias", "from_", "to", "cseq", "call_id", "max_forwards", "contacts", "routes",
                 "record_routes", "user_agent", "body"):  # fmt: skip
        with contextlib.suppress(ParseError):
            getattr(msg, name)
