"""Digest math against the shared vectors, answer validation, verification, challenges."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.auth.answer import MAX_PARAM_LENGTH, DigestAnswer, MalformedAnswer, verify
from sipguard.auth.digest import (
    ALGORITHMS,
    HEX_LENGTH,
    build_challenge,
    build_challenges,
    canonical_algorithm,
    compute_ha1,
    compute_response,
    compute_userhash,
    hash_hex,
    session_ha1,
)
from tests.conftest import CORPORA

VECTORS: list[dict[str, Any]] = json.loads((CORPORA / "digest" / "vectors.json").read_bytes())
HA1_VECTORS: list[dict[str, Any]] = json.loads(
    (CORPORA / "digest" / "ha1_vectors.json").read_bytes()
)


def _body(vector: dict[str, Any]) -> bytes:
    return str(vector.get("entity_body", "")).encode("utf-8")


def _response(vector: dict[str, Any]) -> str:
    ha1 = compute_ha1(vector["algorithm"], vector["username"], vector["realm"], vector["password"])
    return compute_response(
        vector["algorithm"],
        ha1,
        method=vector["method"],
        uri=vector["uri"],
        nonce=vector["nonce"],
        nc=vector["nc"],
        cnonce=vector["cnonce"],
        qop=vector["qop"],
        body=_body(vector),
    )


def _params(vector: dict[str, Any], response: str | None = None) -> dict[str, str]:
    params = {
        "username": vector["username"],
        "realm": vector["realm"],
        "nonce": vector["nonce"],
        "uri": vector["uri"],
        "response": response or vector["expected_response"],
        "algorithm": vector["algorithm"],
    }
    for name in ("qop", "nc", "cnonce", "opaque"):
        if vector.get(name) is not None:
            params[name] = vector[name]
    return params


def test_vectors_are_loaded() -> None:
    assert len(VECTORS) == 23
    assert len(HA1_VECTORS) == 5


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_response_vector(vector: dict[str, Any]) -> None:
    assert _response(vector) == vector["expected_response"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_verifies_through_answer(vector: dict[str, Any]) -> None:
    answer = DigestAnswer.from_params(_params(vector))
    ha1 = compute_ha1(vector["algorithm"], vector["username"], vector["realm"], vector["password"])
    assert verify(answer, ha1, vector["method"], _body(vector))
    # The same answer must fail for another method (SECURITY-CASES 25: REGISTER on INVITE).
    assert not verify(answer, ha1, "BYE", _body(vector))
    assert not verify(answer, compute_ha1(answer.algorithm, "x", "y", "z"), vector["method"])


@pytest.mark.parametrize("vector", [v for v in VECTORS if "ha1" in v], ids=lambda v: v["id"])
def test_vector_stated_ha1(vector: dict[str, Any]) -> None:
    ha1 = compute_ha1(vector["algorithm"], vector["username"], vector["realm"], vector["password"])
    assert ha1 == vector["ha1"]


@pytest.mark.parametrize("vector", HA1_VECTORS, ids=lambda v: f"{v['algorithm']}-{v['realm']}")
def test_ha1_vector(vector: dict[str, Any]) -> None:
    ha1 = compute_ha1(vector["algorithm"], vector["username"], vector["realm"], vector["password"])
    assert ha1 == vector["expected_ha1"]


def test_sha512_256_is_not_truncated_sha512() -> None:
    """RFC 7616 §3.9.2 prints values made with SHA-512 truncated; we must not produce them."""
    (vector,) = [v for v in VECTORS if v["id"] == "rfc7616-3.9.2-sha512-256"]
    printed = vector["printed_in_rfc"]
    response = _response(vector)
    assert response == vector["expected_response"]
    assert response != printed["response"]
    userhash = compute_userhash("SHA-512-256", vector["username"], vector["realm"])
    assert userhash == vector["expected_username_hash"]
    assert userhash != printed["username"]
    data = f"{vector['username']}:{vector['realm']}".encode()
    assert userhash != hashlib.sha512(data).hexdigest()[:64]


def test_md5_sess_and_auth_int() -> None:
    by_id = {v["id"]: v for v in VECTORS}
    sess = by_id["smith-3.4-auth-md5sess"]
    authint = by_id["smith-3.5-authint-md5"]
    both = by_id["smith-3.6-authint-md5sess"]
    empty = by_id["php-sip-authint-empty-body"]
    for vector in (sess, authint, both, empty):
        assert _response(vector) == vector["expected_response"]
    # auth-int hashes the body: the same answer with another body fails.
    answer = DigestAnswer.from_params(_params(authint))
    ha1 = compute_ha1("MD5", authint["username"], authint["realm"], authint["password"])
    assert hashlib.md5(_body(authint)).hexdigest() == authint["entity_body_md5"]
    assert verify(answer, ha1, authint["method"], _body(authint))
    assert not verify(answer, ha1, authint["method"], _body(authint) + b"\r\n")
    assert not verify(answer, ha1, authint["method"], b"")
    # The session HA1 is H(HA1:nonce:cnonce) and depends on the nonce and cnonce.
    base = compute_ha1("MD5-sess", sess["username"], sess["realm"], sess["password"])
    assert base == compute_ha1("MD5", sess["username"], sess["realm"], sess["password"])
    assert (
        session_ha1("MD5-sess", base, sess["nonce"], sess["cnonce"])
        == hashlib.md5(f"{base}:{sess['nonce']}:{sess['cnonce']}".encode()).hexdigest()
    )
    with pytest.raises(ValueError, match="cnonce"):
        compute_response(
            "MD5-sess", base, method="GET", uri="/", nonce="n", nc=None, cnonce=None, qop=None
        )


@pytest.mark.parametrize("algorithm", ["SHA-256-sess", "SHA-512-256-sess"])
def test_sha_sess_round_trip(algorithm: str) -> None:
    ha1 = compute_ha1(algorithm, "alice", "r", "pw")
    kwargs: dict[str, Any] = {
        "method": "INVITE",
        "uri": "sip:bob@r",
        "nonce": "n1",
        "nc": "00000001",
        "cnonce": "c1",
        "qop": "auth",
    }
    response = compute_response(algorithm, ha1, **kwargs)
    plain = compute_response(algorithm.removesuffix("-sess"), ha1, **kwargs)
    assert response != plain and len(response) == 64
    answer = DigestAnswer.from_params(
        {"username": "alice", "realm": "r", "response": response, "algorithm": algorithm}
        | {k: v for k, v in kwargs.items() if k != "method"}
    )
    assert verify(answer, ha1, "INVITE")


def test_qop_requires_nc_and_cnonce_in_compute() -> None:
    with pytest.raises(ValueError):
        compute_response(
            "MD5", "0" * 32, method="A", uri="b", nonce="n", nc=None, cnonce=None, qop="auth"
        )


def test_unknown_algorithm_in_compute() -> None:
    with pytest.raises(ValueError, match="unknown"):
        compute_ha1("SHA-1", "u", "r", "p")


def test_canonical_algorithm() -> None:
    assert canonical_algorithm("md5") == "MD5"
    assert canonical_algorithm("sha-512-256-SESS") == "SHA-512-256-sess"
    assert canonical_algorithm("SHA-512") is None
    assert set(ALGORITHMS) == {
        "MD5",
        "MD5-sess",
        "SHA-256",
        "SHA-256-sess",
        "SHA-512-256",
        "SHA-512-256-sess",
    }


# --- DigestAnswer.from_params ---------------------------------------------------------------

GOOD: dict[str, str] = {
    "username": "alice",
    "realm": "sipguard.test",
    "nonce": "abc",
    "uri": "sip:bob@sipguard.test",
    "response": "0123456789abcdef" * 4,
    "algorithm": "SHA-256",
    "qop": "auth",
    "nc": "00000001",
    "cnonce": "xyz",
    "opaque": "op",
}


def test_answer_fields() -> None:
    answer = DigestAnswer.from_params(GOOD | {"response": "ABCDEF0123456789" * 4})
    assert answer.algorithm == "SHA-256"
    assert answer.response == "abcdef0123456789" * 4
    assert answer.nonce_count == 1
    assert answer.opaque == "op"
    assert not answer.userhash
    assert "abcdef" not in repr(answer)  # the response is a secret in transit


def test_answer_defaults_to_md5_without_qop() -> None:
    params = {k: GOOD[k] for k in ("username", "realm", "nonce", "uri")} | {"response": "a" * 32}
    answer = DigestAnswer.from_params(params)
    assert (answer.algorithm, answer.qop, answer.nc, answer.cnonce) == ("MD5", None, None, None)
    assert answer.nonce_count == 0


def test_answer_parameter_names_are_case_insensitive() -> None:
    answer = DigestAnswer.from_params({k.upper(): v for k, v in GOOD.items()})
    assert answer.username == "alice"
    assert DigestAnswer.from_params(GOOD | {"userhash": "TRUE"}).userhash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"username": None}, "missing username"),
        ({"realm": None}, "missing realm"),
        ({"nonce": None}, "missing nonce"),
        ({"uri": None}, "missing uri"),
        ({"response": None}, "missing response"),
        ({"username": ""}, "missing username"),
        ({"algorithm": "unknown"}, "unknown algorithm"),
        ({"algorithm": "SHA-512"}, "unknown algorithm"),
        ({"algorithm": "MD5"}, "response"),  # 64 hex digits for a 32-digit algorithm
        ({"response": "g" * 64}, "response"),
        ({"response": "a" * 63}, "response"),
        ({"qop": "auth,auth-int"}, "qop"),
        ({"qop": "AUTH"}, "qop"),
        ({"qop": ""}, "qop"),
        ({"nc": None}, "missing nc"),
        ({"nc": "1"}, "nc"),
        ({"nc": "0000000g"}, "nc"),
        ({"nc": "000000001"}, "nc"),
        ({"cnonce": None}, "missing cnonce"),
        ({"cnonce": ""}, "missing cnonce"),
        ({"userhash": "maybe"}, "userhash"),
        ({"uri": "x" * (MAX_PARAM_LENGTH + 1)}, "too long"),
        ({"qop": None, "algorithm": "SHA-256-sess"}, "-sess"),
        ({"username": "\udfff"}, "not UTF-8"),
    ],
)
def test_malformed_answer(change: dict[str, str | None], message: str) -> None:
    params = {k: v for k, v in (GOOD | change).items() if v is not None}
    with pytest.raises(MalformedAnswer, match=message) as exc:
        DigestAnswer.from_params(params)
    assert isinstance(exc.value, ValueError)
    assert "alice" not in str(exc.value)


def test_duplicate_parameter_in_other_case() -> None:
    with pytest.raises(MalformedAnswer, match="duplicate"):
        DigestAnswer.from_params(GOOD | {"Realm": "evil"})


def test_100kb_parameter_refused_without_echo() -> None:
    with pytest.raises(MalformedAnswer) as exc:
        DigestAnswer.from_params(GOOD | {"x" * 100_000: "y"})
    assert len(str(exc.value)) <= 80


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=70), max_size=12))
def test_from_params_raises_only_malformed_answer(params: dict[str, str]) -> None:
    try:
        answer = DigestAnswer.from_params(params)
    except MalformedAnswer:
        return
    # Whatever was accepted can be verified without an exception.
    assert verify(answer, "0" * HEX_LENGTH[answer.algorithm], "INVITE", b"") in (True, False)


@given(
    st.fixed_dictionaries(
        {
            k: st.sampled_from([v, "", "00000001", "a" * 64, "auth-int", "MD5-sess"])
            for k, v in GOOD.items()
        }
    )
)
def test_from_params_near_valid_inputs(params: dict[str, str]) -> None:
    try:
        answer = DigestAnswer.from_params(params)
    except MalformedAnswer:
        return
    assert verify(answer, "0" * 64, "INVITE") in (True, False)


# --- challenges ------------------------------------------------------------------------------


def test_build_challenge_text() -> None:
    value = build_challenge("sipguard.test", "N0nce", "0paque", "sha-256", stale=False)
    assert value == (
        b'Digest realm="sipguard.test", nonce="N0nce", opaque="0paque", algorithm=SHA-256, '
        b'qop="auth"'
    )
    stale = build_challenge("r", "n", "o", "MD5", stale=True, qop=None)
    assert stale == b'Digest realm="r", nonce="n", opaque="o", algorithm=MD5, stale=true'


def test_build_challenge_escapes_realm() -> None:
    value = build_challenge('a"b\\c', "n", "o", "MD5", stale=False)
    assert value.startswith(b'Digest realm="a\\"b\\\\c", ')


@pytest.mark.parametrize("realm", ["a\r\nVia: x", "a\nb", "a\x00"])
def test_build_challenge_refuses_header_injection(realm: str) -> None:
    with pytest.raises(ValueError):
        build_challenge(realm, "n", "o", "MD5", stale=False)


def test_build_challenge_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        build_challenge("r", "n", "o", "SHA-1", stale=False)


def test_build_challenges_one_per_algorithm_same_nonce() -> None:
    values = build_challenges("r", "nonce1", "o", ["SHA-256", "MD5"], True)
    assert len(values) == 2
    assert b"algorithm=SHA-256" in values[0] and b"algorithm=MD5" in values[1]
    assert all(b'nonce="nonce1"' in v and v.endswith(b"stale=true") for v in values)


def test_hash_hex() -> None:
    assert hash_hex("SHA-256-sess", b"") == hashlib.sha256(b"").hexdigest()
    assert hash_hex("SHA-512-256", b"abc") == hashlib.new("sha512_256", b"abc").hexdigest()


# --- through the real codec ------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_through_the_codec(vector: dict[str, Any]) -> None:
    """The codec hands values decoded as latin-1; `latin1=True` gives back the UTF-8 text, so a
    non-ASCII username (RFC 7616 §3.9.2) matches the configured one and its HA1."""
    from sipguard.sip import parse_credentials
    from tests.sipclient import format_auth_params

    value = format_auth_params(_params(vector)).encode("utf-8")
    credentials = parse_credentials(value)
    answer = DigestAnswer.from_params(credentials.params, latin1=True)
    assert answer.username == vector["username"]
    ha1 = compute_ha1(vector["algorithm"], vector["username"], vector["realm"], vector["password"])
    assert verify(answer, ha1, vector["method"], _body(vector))


@pytest.mark.parametrize("field", ["username", "uri", "cnonce", "opaque"])
def test_invalid_utf8_in_an_answer_is_malformed(field: str) -> None:
    """`uri="sip:\xff@x"` must not reach the core as a string that cannot be encoded."""
    from sipguard.sip import parse_credentials
    from tests.sipclient import format_auth_params

    value = format_auth_params(GOOD | {field: "sip:\udcff@x"}).encode("utf-8", "surrogateescape")
    params = parse_credentials(value).params
    with pytest.raises(MalformedAnswer, match="not UTF-8"):
        DigestAnswer.from_params(params, latin1=True)
    with pytest.raises(MalformedAnswer, match="not UTF-8"):
        DigestAnswer.from_params(GOOD | {field: "\u0100"}, latin1=True)  # not one octet


def test_every_answer_field_encodes() -> None:
    answer = DigestAnswer.from_params(GOOD | {"username": "J\xc3\xa4s\xc3\xb8n"}, latin1=True)
    assert answer.username == "Jäsøn"
    for text in (answer.username, answer.realm, answer.nonce, answer.uri, answer.cnonce or ""):
        text.encode("utf-8")


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=70), max_size=12))
def test_from_params_latin1_raises_only_malformed_answer(params: dict[str, str]) -> None:
    with contextlib.suppress(MalformedAnswer):
        answer = DigestAnswer.from_params(params, latin1=True)
        answer.uri.encode("utf-8")
        answer.username.encode("utf-8")
