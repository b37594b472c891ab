"""Credential rotation: several secrets per username, each with not_before/valid_until; a
secret that is not current is refused like a wrong one, at the same cost (issue 16)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import sipguard.auth.credentials as credentials_module
from sipguard.auth.answer import DigestAnswer, verify
from sipguard.auth.credentials import CredentialStore, SecretCheck
from sipguard.auth.digest import compute_ha1, compute_response
from sipguard.settings import Credential, Trunk

REALM = "sipguard.test"
CUTOVER = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
T = CUTOVER.timestamp()


def _store() -> CredentialStore:
    acme = Trunk(
        name="acme",
        credentials=(
            Credential(username="acme", password="old-pw", valid_until=CUTOVER),
            Credential(username="acme", password="new-pw"),
            Credential(username="later", password="later-pw", not_before=CUTOVER),
            Credential(username="solo", password="solo-pw"),
        ),
    )
    beta = Trunk(name="beta", credentials=(Credential(username="beta", password="beta-pw"),))
    return CredentialStore.build([acme, beta], REALM)


def _answer(username: str, password: str, algorithm: str = "MD5") -> DigestAnswer:
    ha1 = compute_ha1(algorithm, username, REALM, password)
    response = compute_response(
        algorithm,
        ha1,
        method="REGISTER",
        uri="sip:x",
        nonce="n",
        nc="00000001",
        cnonce="c",
        qop="auth",
    )
    params = {
        "username": username,
        "realm": REALM,
        "nonce": "n",
        "uri": "sip:x",
        "response": response,
        "algorithm": algorithm,
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "c",
    }
    return DigestAnswer.from_params(params)


def _check(username: str, password: str, now: float, trunks: set[str] | None = None) -> object:
    checked = _store().check(_answer(username, password), "REGISTER", b"", trunks, now)
    return checked.outcome, checked.entry.trunk if checked.entry else None


@pytest.mark.parametrize(
    ("username", "password", "now", "outcome"),
    [
        # during the rotation both secrets work
        ("acme", "old-pw", T - 1, SecretCheck.OK),
        ("acme", "new-pw", T - 1, SecretCheck.OK),
        # after the old one's valid_until only the new one does
        ("acme", "old-pw", T, SecretCheck.NOT_CURRENT),
        ("acme", "new-pw", T, SecretCheck.OK),
        ("acme", "guess", T - 1, SecretCheck.WRONG),
        # not_before
        ("later", "later-pw", T - 1, SecretCheck.NOT_CURRENT),
        ("later", "later-pw", T, SecretCheck.OK),
        ("nobody", "x", T, SecretCheck.UNKNOWN_USER),
    ],
)
def test_rotation_outcomes(username: str, password: str, now: float, outcome: SecretCheck) -> None:
    assert _check(username, password, now) == (
        outcome,
        "acme" if outcome is SecretCheck.OK else None,
    )


def test_check_is_restricted_to_candidate_trunks() -> None:
    assert _check("beta", "beta-pw", T, {"beta"}) == (SecretCheck.OK, "beta")
    assert _check("beta", "beta-pw", T, {"acme"}) == (SecretCheck.UNKNOWN_USER, None)
    assert _check("beta", "beta-pw", T, None) == (SecretCheck.OK, "beta")


def test_removed_secret_is_a_wrong_password_after_reload() -> None:
    trunk = Trunk(name="acme", credentials=(Credential(username="acme", password="new-pw"),))
    store = CredentialStore.build([trunk], REALM)
    checked = store.check(_answer("acme", "old-pw"), "REGISTER", b"", None, T - 1)
    assert checked.outcome is SecretCheck.WRONG and checked.entry is None


@pytest.fixture
def digests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Counts the digest computations `check` makes (cost is counted, not timed)."""
    calls: list[str] = []

    def counting(answer: DigestAnswer, ha1: str, method: str, body: bytes = b"") -> bool:
        calls.append(ha1)
        return verify(answer, ha1, method, body)

    monkeypatch.setattr(credentials_module, "verify", counting)
    yield calls


@pytest.mark.parametrize(
    ("username", "password", "now"),
    [
        ("acme", "old-pw", T - 1),  # right, current, first secret
        ("acme", "new-pw", T - 1),  # right, current, second secret
        ("acme", "old-pw", T),  # right but expired
        ("acme", "guess", T),  # wrong
        ("later", "later-pw", T - 1),  # right but not yet valid
        ("solo", "solo-pw", T),  # a user with one secret
        ("nobody", "x", T),  # unknown
    ],
)
def test_every_answer_costs_the_same_digests(
    digests: list[str], username: str, password: str, now: float
) -> None:
    store = _store()
    store.check(_answer(username, password), "REGISTER", b"", None, now)
    assert len(digests) == 2  # the widest username (acme) holds two secrets


def test_width_is_one_without_rotation(digests: list[str]) -> None:
    trunk = Trunk(name="acme", credentials=(Credential(username="acme", password="pw"),))
    store = CredentialStore.build([trunk], REALM)
    assert store.check(_answer("acme", "pw"), "REGISTER", b"", None, T).outcome is SecretCheck.OK
    assert store.check(_answer("x", "pw"), "REGISTER", b"", None, T).outcome is (
        SecretCheck.UNKNOWN_USER
    )
    assert len(digests) == 2
    empty = CredentialStore.build([], REALM)
    assert empty.check(_answer("x", "pw"), "REGISTER", b"", None, T).outcome is (
        SecretCheck.UNKNOWN_USER
    )
    assert len(digests) == 3


def test_credential_validity_window() -> None:
    until = datetime(2027, 1, 1, tzinfo=UTC)
    cred = Credential(username="a", password="p", valid_until=until, not_before=CUTOVER)
    assert not cred.is_valid_at(datetime(2026, 12, 2, 11, 59, tzinfo=UTC))
    assert cred.is_valid_at(CUTOVER)
    assert not cred.is_valid_at(until)
    with pytest.raises(ValueError, match="timezone-aware"):
        Credential(username="a", password="p", not_before=datetime(2026, 1, 1))
