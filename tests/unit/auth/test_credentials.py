"""The HA1 table: precomputed per algorithm, lookup by trunk, expiry, dummy HA1."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sipguard.auth.answer import DigestAnswer, verify
from sipguard.auth.credentials import CredentialStore
from sipguard.auth.digest import (
    BASE_ALGORITHMS,
    compute_ha1,
    compute_response,
    compute_userhash,
    is_hex_digest,
)
from sipguard.policy.whitelist import parse_rules
from sipguard.settings import Credential, Trunk
from tests.conftest import CORPORA

REALM = "sipguard.test"
UNTIL = datetime(2027, 1, 1, tzinfo=UTC)


def _store() -> CredentialStore:
    acme = Trunk(
        name="acme",
        whitelist=parse_rules(("203.0.113.7",)),
        credentials=(
            Credential(username="acme", password="s3cret", valid_until=UNTIL),
            Credential(username="shared", password="acme-pw"),
        ),
    )
    beta = Trunk(
        name="beta",
        credentials=(
            Credential(
                username="beta", ha1={"MD5": compute_ha1("MD5", "beta", REALM, "b").upper()}
            ),
            Credential(username="shared", password="beta-pw"),
        ),
    )
    open_trunk = Trunk(name="open", whitelist=parse_rules(("10.0.0.1",)))
    return CredentialStore.build([acme, beta, open_trunk], REALM, secret=b"k" * 32)


def test_password_hashed_for_every_algorithm() -> None:
    store = _store()
    for algorithm in BASE_ALGORITHMS:
        entry = store.lookup("acme", algorithm)
        assert entry is not None
        assert entry.trunk == "acme" and entry.algorithm == algorithm
        assert entry.ha1 == compute_ha1(algorithm, "acme", REALM, "s3cret")
        assert entry.valid_until == UNTIL
    assert len(store) == 3 * 3 + 1  # acme, shared x2 in three algorithms; beta in MD5 only


def test_sess_uses_the_base_ha1() -> None:
    store = _store()
    assert store.lookup("acme", "SHA-256-sess") == store.lookup("acme", "SHA-256")


def test_configured_ha1_used_as_is_lowercased() -> None:
    store = _store()
    entry = store.lookup("beta", "MD5")
    assert entry is not None and entry.ha1 == compute_ha1("MD5", "beta", REALM, "b")
    assert store.lookup("beta", "SHA-256") is None  # no HA1 for that algorithm


def test_unknown_user() -> None:
    store = _store()
    assert store.lookup("nobody", "MD5") is None
    assert store.lookup("ACME", "MD5") is None  # usernames are case-sensitive


def test_lookup_restricted_to_candidate_trunks() -> None:
    store = _store()
    assert [e.trunk for e in store.candidates("shared", "MD5")] == ["acme", "beta"]
    entry = store.lookup("shared", "MD5", trunks={"beta"})
    assert entry is not None and entry.ha1 == compute_ha1("MD5", "shared", REALM, "beta-pw")
    assert store.lookup("acme", "MD5", trunks={"beta", "open"}) is None


def test_lookup_userhash() -> None:
    store = _store()
    userhash = compute_userhash("SHA-256", "acme", REALM)
    assert store.lookup_userhash(userhash, "SHA-256") == store.lookup("acme", "SHA-256")
    assert store.lookup_userhash(userhash.upper(), "SHA-256-sess") is not None
    assert store.lookup_userhash(userhash, "MD5") is None


def test_valid_until() -> None:
    entry = _store().lookup("acme", "MD5")
    assert entry is not None
    deadline = UNTIL.timestamp()
    assert entry.valid_at(deadline - 1)
    assert not entry.valid_at(deadline)
    forever = _store().lookup("shared", "MD5")
    assert forever is not None and forever.valid_at(1e12)


def test_secrets_not_in_repr() -> None:
    store = _store()
    entry = store.lookup("acme", "MD5")
    assert entry is not None
    assert entry.ha1 not in repr(entry)
    assert "s3cret" not in repr(store) and entry.ha1 not in repr(store)


def test_dummy_ha1_has_the_shape_of_a_real_one() -> None:
    store = _store()
    for algorithm in (*BASE_ALGORITHMS, "MD5-sess"):
        dummy = store.dummy_ha1(algorithm)
        assert is_hex_digest(algorithm, dummy)
    other = CredentialStore.build([], REALM, secret=b"K" * 32)
    assert other.dummy_ha1("MD5") != store.dummy_ha1("MD5")  # unpredictable without the key


def test_unknown_user_costs_a_verify_and_fails() -> None:
    """No user enumeration (SECURITY-CASES 26): the unknown user path does the same verify."""
    store = _store()
    answer = DigestAnswer.from_params(
        {
            "username": "nobody",
            "realm": REALM,
            "nonce": "n",
            "uri": "sip:x",
            "response": compute_response(
                "MD5",
                compute_ha1("MD5", "nobody", REALM, "guess"),
                method="REGISTER",
                uri="sip:x",
                nonce="n",
                nc=None,
                cnonce=None,
                qop=None,
            ),
        }
    )
    assert store.lookup(answer.username, answer.algorithm) is None
    assert not verify(answer, store.dummy_ha1(answer.algorithm), "REGISTER")


@pytest.mark.parametrize(
    "ha1",
    [{"MD5": "z" * 32}, {"MD5": "a" * 31}, {"SHA-1": "a" * 40}, {"SHA-256": "a" * 32}],
)
def test_bad_configured_ha1(ha1: dict[str, str]) -> None:
    trunk = Trunk(name="t", credentials=(Credential(username="u", ha1=ha1),))
    with pytest.raises(ValueError) as exc:
        CredentialStore.build([trunk], REALM)
    assert "z" * 32 not in str(exc.value) and "a" * 31 not in str(exc.value)


def test_ha1_vectors_through_the_store() -> None:
    vectors: list[dict[str, Any]] = json.loads(
        (CORPORA / "digest" / "ha1_vectors.json").read_bytes()
    )
    for vector in vectors:
        trunk = Trunk(
            name="t",
            credentials=(Credential(username=vector["username"], password=vector["password"]),),
        )
        store = CredentialStore.build([trunk], vector["realm"])
        entry = store.lookup(vector["username"], vector["algorithm"])
        assert entry is not None and entry.ha1 == vector["expected_ha1"]


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256"])
def test_check_finds_every_algorithm_name(algorithm: str) -> None:
    """`check` looks answers up by the algorithm they name (`-sess` on its base's HA1), with the
    dummy of that algorithm for an unknown user."""
    from sipguard.auth.credentials import SecretCheck

    store = _store()
    for username, password, expected in (
        ("acme", "s3cret", SecretCheck.OK),
        ("acme", "guess", SecretCheck.WRONG),
        ("nobody", "s3cret", SecretCheck.UNKNOWN_USER),
    ):
        ha1 = compute_ha1(algorithm, username, REALM, password)
        params = {"username": username, "realm": REALM, "nonce": "n", "uri": "sip:x"}
        params |= {"algorithm": algorithm, "qop": "auth", "nc": "00000001", "cnonce": "c"}
        params["response"] = compute_response(
            algorithm, ha1, method="REGISTER", uri="sip:x", nonce="n", nc="00000001",
            cnonce="c", qop="auth",
        )  # fmt: skip
        checked = store.check(DigestAnswer.from_params(params), "REGISTER", b"", None, 0.0)
        assert checked.outcome is expected, (username, password)
        assert (checked.entry is not None) is (expected is SecretCheck.OK)
