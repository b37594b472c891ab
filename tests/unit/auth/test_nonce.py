"""Signed stateless nonces, opaque, and the nonce-count tracker."""

from __future__ import annotations

import base64
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.auth.nonce import (
    NONCE_LENGTH,
    NonceIssuer,
    NonceTracker,
    NonceVerdict,
    expires_at,
)

KEY = b"k" * 32
REALM = "sipguard.test"
IP = "192.0.2.10"
NOW = 1_700_000_000.25
TTL = 300
UNIQUE = b"\x00\x01\x02\x03\x00\x00\x00\x07"


@pytest.fixture
def issuer() -> NonceIssuer:
    return NonceIssuer(KEY)


@pytest.fixture
def nonce(issuer: NonceIssuer) -> str:
    return issuer.issue(REALM, IP, NOW, TTL, UNIQUE)


def test_nonce_format(nonce: str) -> None:
    assert len(nonce) == NONCE_LENGTH
    assert set(nonce) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_valid_until_expiry(issuer: NonceIssuer, nonce: str) -> None:
    assert issuer.check(nonce, REALM, IP, NOW) is NonceVerdict.VALID
    assert issuer.check(nonce, REALM, IP, NOW + TTL - 0.01) is NonceVerdict.VALID


def test_stale_nonce(issuer: NonceIssuer, nonce: str) -> None:
    """An expired nonce of ours is STALE (stale=true challenge), exactly at and after expiry."""
    deadline = expires_at(nonce)
    assert deadline == math.floor(NOW * 1000) / 1000 + TTL
    assert issuer.check(nonce, REALM, IP, deadline) is NonceVerdict.STALE
    assert issuer.check(nonce, REALM, IP, deadline + 0.001) is NonceVerdict.STALE
    assert issuer.check(nonce, REALM, IP, deadline + 86400 * 365) is NonceVerdict.STALE
    # An expired nonce from another source is not stale: it is not ours to refresh.
    assert issuer.check(nonce, REALM, "192.0.2.11", deadline + 1) is NonceVerdict.INVALID


def test_nan_clock_fails_closed(issuer: NonceIssuer, nonce: str) -> None:
    assert issuer.check(nonce, REALM, IP, math.nan) is NonceVerdict.STALE
    assert not NonceTracker(4).accept(nonce, 1, NOW + TTL, math.nan)


def test_nonce_from_another_source(issuer: NonceIssuer, nonce: str) -> None:
    """A nonce issued to one address is refused from another (SECURITY-CASES 24)."""
    for ip in ("192.0.2.11", "::ffff:192.0.2.10", "192.0.2.1", "", "192.0.2.100"):
        assert issuer.check(nonce, REALM, ip, NOW) is NonceVerdict.INVALID


def test_nonce_from_another_realm_or_key(issuer: NonceIssuer, nonce: str) -> None:
    assert issuer.check(nonce, "other.realm", IP, NOW) is NonceVerdict.INVALID
    assert issuer.check(nonce, REALM + "x", IP, NOW) is NonceVerdict.INVALID
    assert NonceIssuer(b"K" * 32).check(nonce, REALM, IP, NOW) is NonceVerdict.INVALID


def test_realm_and_source_cannot_be_resplit(issuer: NonceIssuer) -> None:
    nonce = issuer.issue("ab", "c", NOW, TTL, UNIQUE)
    assert issuer.check(nonce, "a", "bc", NOW) is NonceVerdict.INVALID


def test_tampered_byte(issuer: NonceIssuer, nonce: str) -> None:
    raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
    for index in range(len(raw)):
        for bit in (0x01, 0x80):
            forged = bytearray(raw)
            forged[index] ^= bit
            text = base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode()
            assert issuer.check(text, REALM, IP, NOW) is NonceVerdict.INVALID


def test_extended_expiry_is_refused(issuer: NonceIssuer, nonce: str) -> None:
    raw = base64.urlsafe_b64decode(nonce + "=")
    later = (int.from_bytes(raw[:8], "big") + 10**9).to_bytes(8, "big")
    forged = base64.urlsafe_b64encode(later + raw[8:]).rstrip(b"=").decode()
    assert issuer.check(forged, REALM, IP, NOW + TTL + 1) is NonceVerdict.INVALID


def test_non_canonical_alias_is_refused(issuer: NonceIssuer, nonce: str) -> None:
    # The last character carries 2 spare bits; an alias decoding to the same bytes is refused.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(nonce[-1])
    alias = nonce[:-1] + alphabet[last | 1]
    assert alias != nonce
    assert base64.urlsafe_b64decode(alias + "=") == base64.urlsafe_b64decode(nonce + "=")
    assert issuer.check(alias, REALM, IP, NOW) is NonceVerdict.INVALID
    assert expires_at(alias) is None


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "=",
        "a",
        "A" * 42,
        "A" * 44,
        "A" * 43,
        "A" * 42 + "=",
        "é" * 43,
        "\x00" * 43,
        "x" * 10**6,
    ],
)
def test_garbage_nonce(issuer: NonceIssuer, garbage: str) -> None:
    assert issuer.check(garbage, REALM, IP, NOW) is NonceVerdict.INVALID


def test_unique_distinguishes_nonces(issuer: NonceIssuer) -> None:
    nonces = {issuer.issue(REALM, IP, NOW, TTL, i.to_bytes(8, "big")) for i in range(100)}
    assert len(nonces) == 100
    # Any length of unique value is accepted (folded to 8 bytes) and stays distinct.
    folded = {issuer.issue(REALM, IP, NOW, TTL, b"boot" + i.to_bytes(12, "big")) for i in range(50)}
    assert len(folded) == 50
    assert all(issuer.check(n, REALM, IP, NOW) is NonceVerdict.VALID for n in folded)


def test_issue_is_deterministic(issuer: NonceIssuer, nonce: str) -> None:
    assert issuer.issue(REALM, IP, NOW, TTL, UNIQUE) == nonce


def test_issuer_refuses_short_key_and_bad_ttl(issuer: NonceIssuer) -> None:
    with pytest.raises(ValueError):
        NonceIssuer(b"short")
    with pytest.raises(ValueError):
        issuer.issue(REALM, IP, NOW, 0, UNIQUE)
    assert "k" * 16 not in repr(issuer)


def test_expires_at(issuer: NonceIssuer, nonce: str) -> None:
    assert issuer.expires_at(nonce) == expires_at(nonce) == 1_700_000_300.25
    assert expires_at("garbage") is None


def test_check_with_expiry_reads_the_nonce_once(issuer: NonceIssuer, nonce: str) -> None:
    deadline = expires_at(nonce)
    assert deadline is not None
    assert issuer.check_with_expiry(nonce, REALM, IP, NOW) == (NonceVerdict.VALID, deadline)
    assert issuer.check_with_expiry(nonce, REALM, IP, deadline) == (NonceVerdict.STALE, deadline)
    assert issuer.check_with_expiry(nonce, REALM, "192.0.2.11", NOW) == (NonceVerdict.INVALID, None)
    assert issuer.check_with_expiry("garbage", REALM, IP, NOW) == (NonceVerdict.INVALID, None)
    assert issuer.check_with_expiry(nonce, REALM, IP, math.nan) == (NonceVerdict.STALE, deadline)


def test_opaque(issuer: NonceIssuer) -> None:
    opaque = issuer.opaque(REALM)
    assert len(opaque) == 32 and int(opaque, 16) >= 0
    assert opaque == NonceIssuer(KEY).opaque(REALM)  # constant per key and realm
    assert opaque != issuer.opaque("other")
    assert opaque != NonceIssuer(b"K" * 32).opaque(REALM)
    assert issuer.check_opaque(opaque, REALM)
    assert not issuer.check_opaque(opaque.upper(), REALM)
    assert not issuer.check_opaque("", REALM)
    assert not issuer.check_opaque("é\udcff", REALM)


@given(st.text(max_size=200), st.text(max_size=20), st.text(max_size=20), st.floats())
def test_check_never_raises(nonce: str, realm: str, ip: str, now: float) -> None:
    assert isinstance(NonceIssuer(KEY).check(nonce, realm, ip, now), NonceVerdict)


@given(st.binary(min_size=32, max_size=32))
def test_forged_raw_nonce_is_invalid(raw: bytes) -> None:
    text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert NonceIssuer(KEY).check(text, REALM, IP, NOW) is NonceVerdict.INVALID


# --- tracker ---------------------------------------------------------------------------------

EXP = NOW + TTL


def test_nonce_replay() -> None:
    """The same nonce-count twice is refused (an Authorization replayed, SECURITY-CASES 24)."""
    tracker = NonceTracker(16)
    assert tracker.accept("n1", 1, EXP, NOW)
    assert not tracker.accept("n1", 1, EXP, NOW + 1)
    assert tracker.accept("n1", 2, EXP, NOW + 2)
    assert not tracker.accept("n1", 2, EXP, NOW + 3)


def test_decreasing_nc_refused() -> None:
    tracker = NonceTracker(16)
    assert tracker.accept("n1", 5, EXP, NOW)
    assert not tracker.accept("n1", 4, EXP, NOW)
    assert not tracker.accept("n1", 1, EXP, NOW)
    assert tracker.accept("n1", 9, EXP, NOW)  # gaps are allowed (RFC 7616 §3.4.5: increasing)


def test_nc_zero_refused() -> None:
    tracker = NonceTracker(16)
    assert not tracker.accept("n1", 0, EXP, NOW)
    assert not tracker.accept("n1", -1, EXP, NOW)
    assert len(tracker) == 0


def test_expired_nonce_refused_and_forgotten() -> None:
    tracker = NonceTracker(16)
    assert not tracker.accept("n0", 1, EXP, EXP)
    assert tracker.accept("n1", 1, EXP, NOW)
    assert tracker.accept("n2", 1, EXP + 10, NOW + 10)
    assert not tracker.accept("n1", 2, EXP, EXP)
    assert tracker.accept("n3", 1, EXP + 20, EXP + 15)  # insertion purges expired n1 and n2
    assert len(tracker) == 1


def test_kill() -> None:
    tracker = NonceTracker(16)
    assert tracker.accept("n1", 1, EXP, NOW)
    tracker.kill("n1", EXP)
    assert not tracker.accept("n1", 2, EXP, NOW)
    tracker.kill("n2", EXP, NOW)  # never seen: a wrong first answer
    assert not tracker.accept("n2", 1, EXP, NOW)
    assert not tracker.accept("n2", 100, EXP, NOW)
    assert len(tracker) == 2


def test_kill_does_not_purge_live_entries() -> None:
    tracker = NonceTracker(16)
    assert tracker.accept("n1", 1, EXP, NOW)
    tracker.kill("n2", EXP + 100)  # no clock given: nothing is purged
    assert not tracker.accept("n1", 1, EXP, NOW)
    assert len(tracker) == 2


def test_cap_evicts_oldest_and_fails_closed() -> None:
    tracker = NonceTracker(3)
    for i in range(3):
        assert tracker.accept(f"n{i}", 1, EXP + i, NOW)
    assert tracker.accept("n3", 1, EXP + 3, NOW)  # evicts n0
    assert len(tracker) == 3
    assert tracker.horizon == EXP
    # n0's count was lost: replaying it must not pass as new (fail closed, re-challenge).
    assert not tracker.accept("n0", 1, EXP, NOW)
    assert not tracker.accept("n0", 2, EXP, NOW)
    # Later nonces are unaffected.
    assert tracker.accept("n1", 2, EXP + 1, NOW)
    assert tracker.accept("n9", 1, EXP + 9, NOW)
    assert len(tracker) == 3


def test_cap_prefers_expired_entries() -> None:
    tracker = NonceTracker(2)
    assert tracker.accept("old", 1, NOW + 1, NOW)
    assert tracker.accept("live", 1, EXP, NOW)
    assert tracker.accept("new", 1, EXP + 1, NOW + 2)  # purges "old" (expired), keeps "live"
    assert tracker.horizon == -math.inf
    assert not tracker.accept("live", 1, EXP, NOW + 2)
    assert tracker.accept("live", 2, EXP, NOW + 2)


def test_horizon_refuses_nonces_from_before_restart() -> None:
    boot = NOW
    tracker = NonceTracker(16, horizon=boot + TTL)
    assert not tracker.accept("issued-before-boot", 1, boot + TTL - 1, boot + 1)
    assert tracker.accept("issued-after-boot", 1, boot + 1 + TTL, boot + 1)


def test_tracker_memory_is_bounded_under_flood() -> None:
    tracker = NonceTracker(100)
    for i in range(10_000):
        tracker.accept(f"n{i}", 1, EXP + i, NOW)
        if i % 3 == 0:
            tracker.kill(f"k{i}", EXP + i, NOW)
    assert len(tracker) == 100


def test_tracker_refuses_zero_size() -> None:
    with pytest.raises(ValueError):
        NonceTracker(0)


def test_issue_check_accept_together(issuer: NonceIssuer, nonce: str) -> None:
    tracker = NonceTracker(16)
    assert issuer.check(nonce, REALM, IP, NOW + 1) is NonceVerdict.VALID
    deadline = expires_at(nonce)
    assert deadline is not None
    assert tracker.accept(nonce, 1, deadline, NOW + 1)
    assert not tracker.accept(nonce, 1, deadline, NOW + 2)


def test_check_survives_a_buggy_caller(issuer: NonceIssuer, nonce: str) -> None:
    assert issuer.check(None, REALM, IP, NOW) is NonceVerdict.INVALID  # type: ignore[arg-type]
    assert issuer.check(nonce, None, IP, NOW) is NonceVerdict.INVALID  # type: ignore[arg-type]


def test_check_opaque_per_realm_with_a_bounded_cache(issuer: NonceIssuer) -> None:
    # The expected opaque is remembered per realm: right for each realm, bounded in count.
    realms = [f"realm-{i}.example" for i in range(200)]
    for realm in realms:
        assert issuer.check_opaque(issuer.opaque(realm), realm)
        assert not issuer.check_opaque(issuer.opaque(realm), realm + "x")
    assert issuer.check_opaque(issuer.opaque(REALM), REALM)
    assert not issuer.check_opaque(issuer.opaque("other"), REALM)
