"""Identity headers: byte-exact stamps, the canonical form, verification outcomes, rotation."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.identity import (
    InboundFilter,
    Outcome,
    Stamper,
    attribute_header,
    attribute_name_problem,
    attribute_value_problem,
    key_id_problem,
    prefix_problem,
    verify,
    verify_message,
)
from sipguard.identity.headers import format_signature, parse_signature
from sipguard.settings import IdentitySettings, SigningKey, Trunk

K1 = SigningKey("k1", b"k1-secret-0123456789abcdef")
K2 = SigningKey("k2", b"k2-secret-fedcba9876543210")
NOW = 1_764_655_000.75
ACME = Trunk(name="acme", attributes=(("plan", "gold"), ("org_id", "8d1c5e0a")))
IDENTITY = IdentitySettings(signing_keys=(K1,))
CALL = (b"a84b4c76e66710@pc33.example.com", (314159, b"INVITE"), b"1928301774")


def _lines(
    identity: IdentitySettings | None = IDENTITY,
    user: str = "alice",
    source: tuple[str, int] = ("203.0.113.7", 5062),
    now: float = NOW,
    trunk: Trunk = ACME,
) -> list[bytes]:
    call_id, cseq, tag = CALL
    return Stamper(identity, [trunk]).lines(trunk.name, user, source, call_id, cseq, tag, now)


def _headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    base = [
        (b"Via", b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1"),
        (b"From", b"Alice <sip:alice@example.com>;tag=1928301774"),
        (b"To", b"<sip:bob@example.com>"),
        (b"Call-ID", CALL[0]),
        (b"CSeq", b"314159 INVITE"),
    ]
    return base + [tuple(line.split(b": ", 1)) for line in lines]  # type: ignore[misc]


def _mac(key: bytes, form: bytes) -> bytes:
    return hmac.new(key, form, hashlib.sha256).hexdigest().encode()


# ------------------------------------------------------------------ byte-exact stamps


def test_plain_headers_without_identity_section() -> None:
    """Unsigned, as before issue 16; the trunk's attributes (if any) are sent too."""
    plain = Trunk(name="acme")
    assert _lines(None, trunk=plain) == [b"X-Sipguard-Trunk: acme", b"X-Sipguard-User: alice"]
    assert _lines(None, user="", trunk=plain) == [b"X-Sipguard-Trunk: acme"]
    assert _lines(None) == [
        b"X-Sipguard-Trunk: acme",
        b"X-Sipguard-User: alice",
        b"X-Sipguard-Attr-Plan: gold",
        b"X-Sipguard-Attr-Org-Id: 8d1c5e0a",
    ]


def test_signed_digest_stamp_is_byte_exact() -> None:
    form = (
        b"sipguard-identity-1\n"
        b"key:k1\n"
        b"time:1764655000\n"
        b"call-id:a84b4c76e66710@pc33.example.com\n"
        b"cseq:314159 INVITE\n"
        b"from-tag:1928301774\n"
        b"x-sipguard-source:203.0.113.7:5062\n"
        b"x-sipguard-user:alice\n"
        b"x-sipguard-trunk:acme\n"
        b"x-sipguard-auth:digest\n"
        b"x-sipguard-attr-org-id:8d1c5e0a\n"
        b"x-sipguard-attr-plan:gold\n"
    )
    assert _lines() == [
        b"X-Sipguard-Trunk: acme",
        b"X-Sipguard-User: alice",
        b"X-Sipguard-Attr-Plan: gold",
        b"X-Sipguard-Attr-Org-Id: 8d1c5e0a",
        b"X-Sipguard-Auth: digest",
        b"X-Sipguard-Source: 203.0.113.7:5062",
        b"X-Sipguard-Identity: v=1;kid=k1;ts=1764655000;mac=" + _mac(K1.secret, form),
    ]


def test_signed_ip_stamp_ipv6_source_custom_prefix() -> None:
    identity = IdentitySettings(signing_keys=(K2, K1), header_prefix="X-Tenant-")
    form = (
        b"sipguard-identity-1\nkey:k2\ntime:1764655000\n"
        b"call-id:a84b4c76e66710@pc33.example.com\ncseq:314159 INVITE\nfrom-tag:1928301774\n"
        b"x-tenant-source:[2001:db8::7]:5060\nx-tenant-trunk:acme\nx-tenant-auth:ip\n"
        b"x-tenant-attr-org-id:8d1c5e0a\nx-tenant-attr-plan:gold\n"
    )
    assert _lines(identity, user="", source=("2001:db8::7", 5060)) == [
        b"X-Tenant-Trunk: acme",
        b"X-Tenant-Attr-Plan: gold",
        b"X-Tenant-Attr-Org-Id: 8d1c5e0a",
        b"X-Tenant-Auth: ip",
        b"X-Tenant-Source: [2001:db8::7]:5060",
        b"X-Tenant-Identity: v=1;kid=k2;ts=1764655000;mac=" + _mac(K2.secret, form),
    ]


def test_trunk_unknown_to_the_stamper_gets_no_attributes() -> None:
    call_id, cseq, tag = CALL
    stamper = Stamper(IDENTITY, [])
    lines = stamper.lines("gone", "", ("192.0.2.1", 5060), call_id, cseq, tag, NOW)
    assert lines[:2] == [b"X-Sipguard-Trunk: gone", b"X-Sipguard-Auth: ip"]
    assert verify(_headers(lines), [K1], NOW, 30) is Outcome.VALID


def test_stamper_repr_holds_no_secret() -> None:
    assert "secret" not in repr(Stamper(IDENTITY, [ACME]))
    assert K1.secret.decode() not in repr(Stamper(IDENTITY, [ACME]))


# ------------------------------------------------------------------ verification outcomes


def test_valid_signature() -> None:
    assert verify(_headers(_lines()), [K1], NOW, 30) is Outcome.VALID
    text = [(n.decode(), v.decode()) for n, v in _headers(_lines())]
    assert verify(text, [K1], NOW, 30) is Outcome.VALID


def _replace(
    headers: list[tuple[bytes, bytes]], name: bytes, value: bytes
) -> list[tuple[bytes, bytes]]:
    return [(n, value if n == name else v) for n, v in headers]


TAMPER = [
    ("call-id", lambda h: _replace(h, b"Call-ID", b"other@pc33.example.com")),
    ("cseq number", lambda h: _replace(h, b"CSeq", b"314160 INVITE")),
    ("cseq method", lambda h: _replace(h, b"CSeq", b"314159 REGISTER")),
    ("from-tag", lambda h: _replace(h, b"From", b"Alice <sip:alice@example.com>;tag=99")),
    ("source", lambda h: _replace(h, b"X-Sipguard-Source", b"203.0.113.8:5062")),
    ("user", lambda h: _replace(h, b"X-Sipguard-User", b"bob")),
    ("trunk", lambda h: _replace(h, b"X-Sipguard-Trunk", b"other")),
    ("auth", lambda h: _replace(h, b"X-Sipguard-Auth", b"ip")),
    ("attribute value", lambda h: _replace(h, b"X-Sipguard-Attr-Plan", b"platinum")),
    ("attribute dropped", lambda h: [p for p in h if p[0] != b"X-Sipguard-Attr-Plan"]),
    ("user dropped", lambda h: [p for p in h if p[0] != b"X-Sipguard-User"]),
    ("attribute added", lambda h: [*h, (b"x-sipguard-attr-seats", b"10")]),
    ("prefix header added", lambda h: [*h, (b"X-SIPGUARD-Extra", b"1")]),
]


@pytest.mark.parametrize(("what", "tamper"), TAMPER, ids=[t[0] for t in TAMPER])
def test_changing_a_covered_header_fails(what: str, tamper: object) -> None:
    assert callable(tamper)
    assert verify(tamper(_headers(_lines())), [K1], NOW, 30) is Outcome.BAD_MAC


@pytest.mark.parametrize(
    ("edit", "outcome"),
    [
        (lambda h: [p for p in h if p[0] != b"X-Sipguard-Identity"], Outcome.NO_SIGNATURE),
        (lambda h: _replace(h, b"X-Sipguard-Identity", b"v=1;kid=k1"), Outcome.MALFORMED),
        (lambda h: [*h, h[-1]], Outcome.MALFORMED),
        (lambda h: [*h, (b"X-Sipguard-Trunk", b"acme")], Outcome.INCOMPLETE),
        (lambda h: [*h, (b"Call-ID", CALL[0])], Outcome.INCOMPLETE),
        (lambda h: [p for p in h if p[0] != b"X-Sipguard-Auth"], Outcome.INCOMPLETE),
        (lambda h: [p for p in h if p[0] != b"CSeq"], Outcome.INCOMPLETE),
        (lambda h: _replace(h, b"CSeq", b"x INVITE"), Outcome.INCOMPLETE),
        (lambda h: _replace(h, b"From", b"<<<"), Outcome.INCOMPLETE),
    ],
)
def test_outcome_table(edit: object, outcome: Outcome) -> None:
    assert callable(edit)
    assert verify(edit(_headers(_lines())), [K1], NOW, 30) is outcome


def test_unknown_key() -> None:
    assert verify(_headers(_lines()), [K2], NOW, 30) is Outcome.UNKNOWN_KEY


def test_max_age_bounds_both_ways() -> None:
    headers = _headers(_lines())
    signed = int(NOW)
    assert verify(headers, [K1], signed + 30, 30) is Outcome.VALID
    assert verify(headers, [K1], signed + 30.5, 30) is Outcome.EXPIRED
    assert verify(headers, [K1], signed - 30, 30) is Outcome.VALID
    assert verify(headers, [K1], signed - 31, 30) is Outcome.FUTURE


def test_wrong_secret_under_the_right_id_is_bad_mac() -> None:
    forged = SigningKey("k1", b"not-the-k1-secret-at-all")
    assert verify(_headers(_lines()), [forged], NOW, 30) is Outcome.BAD_MAC


def test_names_are_case_insensitive_and_compact_forms_count() -> None:
    headers = [(n.lower(), v) for n, v in _headers(_lines())]
    headers = [(b"i" if n == b"call-id" else b"f" if n == b"from" else n, v) for n, v in headers]
    assert verify(headers, [K1], NOW, 30) is Outcome.VALID


def test_verify_message_reads_a_whole_request() -> None:
    lines = _lines()
    raw = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK77\r\n"
        b"Max-Forwards: 69\r\n"
        b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
        b"CSeq:   314159   INVITE\r\n"
        + b"".join(line + b"\r\n" for line in lines)
        + b"Content-Length: 0\r\n\r\n"
    )
    assert verify_message(raw, [K1], NOW, 30) is Outcome.VALID
    folded = raw.replace(b"X-Sipguard-Trunk: acme", b"X-Sipguard-Trunk:\r\n  acme")
    assert verify_message(folded, [K1], NOW, 30) is Outcome.VALID
    assert verify_message(raw.replace(b"acme", b"acmf"), [K1], NOW, 30) is Outcome.BAD_MAC
    assert verify_message(b"hello", [K1], NOW, 30) is Outcome.UNREADABLE


# ------------------------------------------------------------------ properties

_VALUE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=';,"<>\\'),
    min_size=1,
    max_size=20,
)
_COVERED = [
    b"Call-ID",
    b"X-Sipguard-Source",
    b"X-Sipguard-User",
    b"X-Sipguard-Trunk",
    b"X-Sipguard-Auth",
    b"X-Sipguard-Attr-Plan",
    b"X-Sipguard-Attr-Org-Id",
]


@given(which=st.sampled_from(_COVERED), value=_VALUE)
def test_property_changing_any_covered_header_fails(which: bytes, value: str) -> None:
    headers = _headers(_lines())
    new = value.encode()
    if dict(headers)[which] == new:
        return
    assert verify(_replace(headers, which, new), [K1], NOW, 30) is Outcome.BAD_MAC


@given(
    user=st.sampled_from(["", "alice", "bob.smith"]),
    attrs=st.lists(
        st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), _VALUE),
        max_size=4,
        unique_by=lambda a: attribute_header("", a[0]).lower(),
    ),
    port=st.integers(1, 65535),
    rounds=st.integers(1, 3),
)
def test_property_rotation_keeps_older_signatures_verifiable(
    user: str, attrs: list[tuple[str, str]], port: int, rounds: int
) -> None:
    """Each rotation puts a new key first; whatever any earlier key signed still verifies as
    long as that key stays listed, and stops verifying once it is removed."""
    trunk = Trunk(name="acme", attributes=tuple(attrs))
    keys = [SigningKey(f"k{i}", b"secret-%d-0123456789" % i) for i in range(rounds + 1)]
    signed = [
        _headers(
            _lines(IdentitySettings(signing_keys=(key,)), user, ("192.0.2.1", port), NOW, trunk)
        )
        for key in keys
    ]
    listed = list(reversed(keys))  # newest first, as in the config
    for headers in signed:
        assert verify(headers, listed, NOW + 5, 30) is Outcome.VALID
    assert verify(signed[0], listed[:-1], NOW, 30) is Outcome.UNKNOWN_KEY


# ------------------------------------------------------------------ names, values, syntax


def test_attribute_header_names() -> None:
    assert attribute_header("X-Sipguard-", "org_id") == "X-Sipguard-Attr-Org-Id"
    assert attribute_header("X-Sipguard-", "PLAN") == "X-Sipguard-Attr-Plan"
    assert attribute_header("X-T-", "a-b_c") == "X-T-Attr-A-B-C"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("org_id", True),
        ("plan", True),
        ("9lives", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("_x", False),
        ("org id", False),
        ("org:id", False),
        ("née", False),
    ],
)
def test_attribute_name_rules(name: str, ok: bool) -> None:
    assert (attribute_name_problem(name) is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("8d1c5e0a", True),
        ("Gold plan", True),
        ("Société", True),
        ("x" * 256, True),
        ("x" * 257, False),
        ("é" * 129, False),
        ("", False),
        ("a\r\nX-Sipguard-Trunk: b", False),
        ("a\nb", False),
        ("tab\there", False),
        ("nul\x00", False),
        (" lead", False),
        ("trail ", False),
        ("del\x7f", False),
    ],
)
def test_attribute_value_rules(value: str, ok: bool) -> None:
    assert (attribute_value_problem(value) is None) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("k1", True),
        ("2026-12.a_b", True),
        ("", False),
        ("k;1", False),
        ("k=1", False),
        ("x" * 33, False),
        ("ké", False),
    ],
)
def test_key_id_rules(text: str, ok: bool) -> None:
    assert (key_id_problem(text) is None) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("X-Sipguard-", True),
        ("X-Tenant-", True),
        ("", False),
        ("X Y-", False),
        ("X:Y-", False),
        ("X" * 33, False),
    ],
)
def test_prefix_rules(text: str, ok: bool) -> None:
    assert (prefix_problem(text) is None) is ok


def test_signature_syntax() -> None:
    mac = b"ab" * 32
    assert format_signature(b"k1", 17, mac) == b"v=1;kid=k1;ts=17;mac=" + mac
    parsed = parse_signature(b" mac=" + mac.upper() + b" ; ts=17;KID=k1 ;v=1")
    assert parsed is not None
    assert (parsed.key_id, parsed.timestamp, parsed.mac) == (b"k1", 17, mac)
    for bad in [
        b"",
        b"v=1;kid=k1;ts=17",
        b"v=2;kid=k1;ts=17;mac=" + mac,
        b"v=1;kid=k1;ts=17;mac=" + mac + b";x=1",
        b"v=1;kid=k1;kid=k1;ts=17;mac=" + mac,
        b"v=1;kid=k1;ts=-17;mac=" + mac,
        b"v=1;kid=k1;ts=1234567890123;mac=" + mac,
        b"v=1;kid=k1;ts=17;mac=" + mac[:-1],
        b"v=1;kid=k;1;ts=17;mac=" + mac,
        b"v=1;kid=;ts=17;mac=" + mac,
        b"v=1;kid=k1;ts=\xd9\xa1;mac=" + mac,
    ]:
        assert parse_signature(bad) is None, bad


# ------------------------------------------------------------------ inbound filter


@pytest.mark.parametrize(
    ("key", "default", "configured"),
    [
        (b"x-sipguard-trunk", True, False),
        (b"x-sipguard-attr-org-id", True, False),
        (b"x-tenant-trunk", False, True),
        (b"p-asserted-identity", True, True),
        (b"x-authenticated-user", True, True),
        (b"x-forwarded-for", False, True),
        (b"remote-party-id", False, False),
        (b"from", False, False),
        (b"x-sipguardtrunk", False, False),
    ],
)
def test_inbound_filter(key: bytes, default: bool, configured: bool) -> None:
    identity = IdentitySettings(
        signing_keys=(K1,), header_prefix="X-Tenant-", strip_inbound=("X-Forwarded-For",)
    )
    assert InboundFilter(None).strips(key) is default
    assert InboundFilter(identity).strips(key) is configured


@given(key=st.binary(min_size=1, max_size=200), data=st.binary(max_size=600))
def test_property_precomputed_hmac_is_hmac_sha256(key: bytes, data: bytes) -> None:
    """The signer's precomputed pads (RFC 2104) give what the verifier's `hmac.digest` gives,
    for keys shorter and longer than SHA-256's block."""
    from sipguard.identity.stamp import _Mac

    expected = hmac.new(key, data, hashlib.sha256).hexdigest().encode()
    assert _Mac(key).hex(data) == expected
    assert "secret" not in repr(_Mac(key)) and repr(key) not in repr(_Mac(key))
