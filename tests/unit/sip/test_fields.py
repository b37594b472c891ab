"""Typed values: URIs, Via, name-addr, comma lists, digest credentials and challenges."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.errors import ParseError
from sipguard.sip import NameAddr, parse_challenge, parse_credentials, parse_uri, split_list
from sipguard.sip.values import parse_name_addr, parse_via_values


def test_sip_uri_parts() -> None:
    uri = parse_uri(b"SIPS:alice:pw@Example.COM:5061;transport=TLS;lr?Subject=hi&X=")
    assert uri.scheme == b"sips" and uri.is_sip
    assert uri.user == b"alice" and uri.password == b"pw"
    assert uri.host == b"example.com" and uri.port == 5061
    assert uri.params == ((b"transport", b"TLS"), (b"lr", None))
    assert uri.param(b"transport") == b"TLS" and uri.has_param(b"lr")
    assert uri.headers == ((b"Subject", b"hi"), (b"X", b""))
    assert b"pw" not in repr(uri).encode()


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [
        (b"sip:[2001:db8::10]", b"2001:db8::10", None),
        (b"sip:[2001:db8::10]:5070", b"2001:db8::10", 5070),
        (b"sip:[2001:db8::10:5070]", b"2001:db8::10:5070", None),
        (b"sip:u@[::ffff:192.0.2.1]", b"::ffff:192.0.2.1", None),
        (b"sip:192.0.2.1:0", b"192.0.2.1", 0),
        (b"sip:h:65535", b"h", 65535),
        (b"sip:example.com.", b"example.com.", None),
    ],
)
def test_uri_hosts(raw: bytes, host: bytes, port: int | None) -> None:
    uri = parse_uri(raw)
    assert (uri.host, uri.port) == (host, port)


@pytest.mark.parametrize(
    "raw",
    [b"sip:2001:db8::10", b"sip:[2001:db8:::192.0.2.1]", b"sip:[fe80::1%eth0]", b"sip:h:65536",
     b"sip:", b"sip:@h", b"sip:u@", b"sip:-h", b"sip:h h", b"sip:u@h@i", b"sip:%zz@h",
     b"sip:h;=x", b"sip:h?", b"sip:[1.2.3.4]", b"sips:u@h:1:2", b"sip:h\x00", b"x" * 2000,
     b":nothing", b"1tel:123", b""],
)  # fmt: skip
def test_bad_uris(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_uri(raw)


def test_other_schemes_recorded() -> None:
    uri = parse_uri(b"tel:+1-201-555-0123;phone-context=x")
    assert uri.scheme == b"tel" and not uri.is_sip and uri.host == b""
    assert parse_uri(b"soap.beep://192.0.2.103:3002").scheme == b"soap.beep"


def test_via_fields() -> None:
    (via,) = parse_via_values(
        b"SIP / 2.0 / tls [2001:db8::9]:5061 ;Branch=z9hG4bKx; received=[2001:db8::1];rport=5062"
    )
    assert via.protocol == b"SIP/2.0" and via.transport == b"TLS"
    assert via.host == b"2001:db8::9" and via.port == 5061
    assert via.branch == b"z9hG4bKx"
    assert via.received == b"2001:db8::1"
    assert via.has_rport and via.rport == 5062
    assert via.sent_by == b"[2001:db8::9]:5061"
    assert via.params[0] == (b"branch", b"z9hG4bKx")


def test_via_rport_flag_and_absent() -> None:
    (flag,) = parse_via_values(b"SIP/2.0/UDP h;rport;branch=z9hG4bK1")
    assert flag.has_rport and flag.rport is None
    (absent,) = parse_via_values(b"SIP/2.0/UDP h;branch=z9hG4bK1")
    assert not absent.has_rport and absent.rport is None and absent.received is None
    # `rport` spelled only in a value or a longer name, or in another case: read as a name
    for value, expected in (
        (b"SIP/2.0/UDP h;branch=z9hG4bKrport;x=rport", False),
        (b"SIP/2.0/UDP h;rports=1;branch=z9hG4bK1", False),
        (b"SIP/2.0/UDP h;RPort;branch=z9hG4bK1", True),
        (b"SIP/2.0/UDP h ; rPORT = 5 ;branch=z9hG4bK1", True),
    ):
        (via,) = parse_via_values(value)
        assert via.has_rport is expected, value


def test_via_list() -> None:
    vias = parse_via_values(b"SIP/2.0/UDP a;branch=1 , SIP/2.0/TCP b:5060;branch=2")
    assert [(v.host, v.port) for v in vias] == [(b"a", None), (b"b", 5060)]


@pytest.mark.parametrize(
    "value",
    [b"", b"SIP/2.0/UDP", b"SIP/2.0/UDP 192.0.2.15;;,;,,", b"SIP/2.0 UDP h", b"SIP/2.0/UDP h,",
     b"SIP/2.0/UDP h;rport=x", b"SIP/2.0/UDP h;rport=70000", b"SIP/2.0/UDP 2001:db8::1",
     b"SIP/2.0/UDP h;branch=\"a", b"/", b"// ;0=;"],
)  # fmt: skip
def test_bad_vias(value: bytes) -> None:
    with pytest.raises(ParseError):
        parse_via_values(value)


@pytest.mark.parametrize(
    ("value", "display", "uri", "tag"),
    [
        (b'"A \\"B\\"" <sip:a@h>;tag=1', b'A \\"B\\"', b"sip:a@h", b"1"),
        (b"A B <sip:a@h>", b"A B", b"sip:a@h", None),
        (b'"x"<sip:a@h>', b"x", b"sip:a@h", None),
        (b"<sip:a@h;lr>;tag=2", None, b"sip:a@h;lr", b"2"),
        (b"sip:a@h ; tag = 3", None, b"sip:a@h", b"3"),
        (b"<tel:+123>", None, b"tel:+123", None),
        (b"<urn:service:sos>", None, b"urn:service:sos", None),
    ],
)
def test_name_addr(value: bytes, display: bytes | None, uri: bytes, tag: bytes | None) -> None:
    addr = parse_name_addr(value)
    assert isinstance(addr, NameAddr)
    assert (addr.display_name, addr.uri.raw, addr.tag) == (display, uri, tag)


@pytest.mark.parametrize(
    "value",
    [b'"Mr. J. User <sip:j.user@example.com>', b"Bell, Alexander <sip:a@h>",
     b"< sip:a@h >", b"sip:a@h?Route=x", b"<sip:a@h>;;", b"<sip:a@h", b"sip:a@h,b",
     b"<sip:2001:db8::1>", b'"a"b <sip:a@h>', b"", b";tag=1"],
)  # fmt: skip
def test_bad_name_addr(value: bytes) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(value)


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list(b'"a, b" <sip:x@h>, <sip:y@h;p=1,2>') == [
        b'"a, b" <sip:x@h>',
        b"<sip:y@h;p=1,2>",
    ]
    assert split_list(b"") == []
    with pytest.raises(ParseError):
        split_list(b"a,,b")
    with pytest.raises(ParseError):
        split_list(b'"a,b')


# --- digest (RFC 7616, RFC 3261 §22.4; SECURITY-CASES 23) ---

DIGEST = (
    b'Digest username="bob", realm="sipguard.example", nonce="abc", uri="sip:a@h", '
    b'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, '
    b'cnonce="x\\"y"'
)


def test_parse_credentials() -> None:
    creds = parse_credentials(DIGEST)
    assert creds.scheme == b"Digest" and creds.is_digest
    assert creds.params["username"] == "bob"
    assert creds.params["realm"] == "sipguard.example"
    assert creds.params["algorithm"] == "MD5"
    assert creds.params["nc"] == "00000001"
    assert creds.params["cnonce"] == 'x"y'
    assert "0123456789abcdef" not in repr(creds)


def test_parameter_names_case_insensitive() -> None:
    creds = parse_credentials(b'digest USERNAME="a", Realm=r')
    assert creds.params == {"username": "a", "realm": "r"}


def test_utf8_username_round_trips() -> None:
    creds = parse_credentials('Digest username="Jürgen"'.encode())
    assert creds.params["username"].encode("latin-1") == "Jürgen".encode()


@pytest.mark.parametrize(
    "value",
    [
        b'Digest username="a", username="b"',  # duplicate
        b'Digest username="a", USERNAME="a"',
        b'Digest username="unterminated',
        b'Digest username="a\\"',  # backslash escapes the closing quote
        b"Digest username",  # no '='
        b'Digest username="a",',
        b'Digest username="a",, realm="r"',
        b"Digest",
        b"",
        b"Digest " + b"a=" + b"x" * 100_000,  # 100 KB value
        b'Digest username="a" realm="r"',  # missing comma
    ],
)
def test_broken_credentials(value: bytes) -> None:
    with pytest.raises(ParseError):
        parse_credentials(value)


def test_other_schemes_have_no_params() -> None:
    creds = parse_credentials(b"NoOneKnowsThisScheme opaque-data=here")
    assert creds.scheme == b"NoOneKnowsThisScheme" and not creds.is_digest
    assert creds.params == {}
    assert parse_credentials(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").params == {}


def test_parse_challenge() -> None:
    challenge = parse_challenge(
        b'Digest realm="sipguard.example", nonce="n1", algorithm=SHA-256, qop="auth", stale=true'
    )
    assert challenge.params == {
        "realm": "sipguard.example",
        "nonce": "n1",
        "algorithm": "SHA-256",
        "qop": "auth",
        "stale": "true",
    }


# The parameter loop `parse_credentials` had before it read the auth-params in two regex passes,
# kept as the reference: both must accept the same values with the same params.
_REF_TOKEN = rb"A-Za-z0-9\-.!%*_+`'~"
_REF_PARAM_RE = re.compile(
    rb"[ \t]*([" + _REF_TOKEN + rb"]+)[ \t]*=[ \t]*("
    rb'"(?:[^"\\\r\n]|\\[^\r\n])*"'
    rb"|[" + _REF_TOKEN + rb"/:]+)[ \t]*(,|$)"
)


def _reference_params(value: bytes) -> dict[str, str] | None:
    pos = len(b"Digest ")
    params: dict[str, str] = {}
    while pos < len(value):
        p = _REF_PARAM_RE.match(value, pos)
        if p is None:
            return None
        raw = p.group(2)
        if raw[:1] == b'"':
            raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1], flags=re.S)
        name = p.group(1).lower().decode("ascii")
        if name in params:
            return None
        params[name] = raw.decode("latin-1")
        pos = p.end()
        if p.group(3) == b"," and pos >= len(value):
            return None
    return params or None


@pytest.mark.parametrize(
    ("value", "params"),
    [
        (b'Digest a="x\\\\y"', {"a": "x\\y"}),  # quoted-pair resolved
        (b'Digest a="", b=1', {"a": "", "b": "1"}),  # empty quoted-string
        (b'Digest a="x, y=z", b=1', {"a": "x, y=z", "b": "1"}),  # comma inside quotes
        (b'Digest a = "x" ,\tb=sip:h:5060', {"a": "x", "b": "sip:h:5060"}),  # LWS, ':' in token
        (b'Digest a="\xe9\\\xe9"', {"a": "\xe9\xe9"}),  # octets kept (latin-1)
    ],
)
def test_credentials_params(value: bytes, params: dict[str, str]) -> None:
    assert parse_credentials(value).params == params
    assert _reference_params(value) == params


@pytest.mark.parametrize(
    "value",
    [b'Digest a="x\r\n"', b'Digest a="x\ny"', b"Digest a=1 ,", b"Digest a=1,b", b"Digest a=1\n",
     b'Digest a="x"y', b'Digest a=""", b=1', b"Digest a=1, A=2", b"Digest =1", b"Digest a=@",
     b'Digest a="' + b"x" * 8000, b"Digest " + b"x" * 8000],  # long malformed: linear work
)  # fmt: skip
def test_broken_credentials_params(value: bytes) -> None:
    with pytest.raises(ParseError):
        parse_credentials(value)
    assert _reference_params(value) is None


_AUTH_PIECES = st.sampled_from(
    [b"a", b"B", b"nc", b"=", b" ", b"\t", b",", b'"', b"\\", b"x", b"1", b":", b"/", b"@",
     b"\r", b"\n", b"\x00", b"\xe9", b'="', b'", ', b", a=", b'\\"', b"realm", b"REALM"]
)  # fmt: skip


@given(st.lists(_AUTH_PIECES, max_size=24).map(b"".join))
def test_credentials_match_the_reference_loop(params: bytes) -> None:
    value = b"Digest " + params
    expected = _reference_params(value)
    try:
        got: dict[str, str] | None = parse_credentials(value).params
    except ParseError:
        got = None
    assert got == expected
