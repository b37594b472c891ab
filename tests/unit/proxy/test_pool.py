"""The upstream pool: health hysteresis and candidate selection (sipguard.proxy.pool)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.proxy.actions import Address, Transport
from sipguard.proxy.pool import Health, HealthPolicy, Member, Pool, members_up

A = Member("sip:127.0.0.1:5070", Address(Transport.UDP, "127.0.0.1", 5070))
B = Member("sip:127.0.0.1:5080", Address(Transport.UDP, "127.0.0.1", 5080))
C = Member("sip:127.0.0.1:5090;transport=tcp", Address(Transport.TCP, "127.0.0.1", 5090), 2)
POLICY = HealthPolicy(down_after=3, up_after=2)
CALL_IDS = [f"call-{i}@example".encode() for i in range(3000)]


def test_members_start_up() -> None:
    pool = Pool([A, B], POLICY)
    assert pool.health(A.address) is Health.UP
    assert pool.any_up


def test_one_lost_probe_does_not_mark_down() -> None:
    pool = Pool([A], POLICY)
    assert pool.record(A.address, False, "timeout") is None
    assert pool.record(A.address, False, "timeout") is None
    assert pool.record(A.address, True, "answered") is None  # the streak starts again
    assert pool.record(A.address, False, "timeout") is None
    assert pool.record(A.address, False, "timeout") is None
    assert pool.health(A.address) is Health.UP


def test_down_after_consecutive_failures_then_back_up() -> None:
    pool = Pool([A, B], POLICY)
    changes = [pool.record(A.address, False, "timeout") for _ in range(3)]
    assert changes[:2] == [None, None]
    change = changes[2]
    assert change is not None
    assert (change.member, change.health, change.reason) == (A, Health.DOWN, "timeout")
    assert pool.candidates(b"x") == (B,)
    assert pool.record(A.address, True, "answered") is None
    back = pool.record(A.address, True, "answered")
    assert back is not None and back.health is Health.UP
    assert set(pool.candidates(b"x")) == {A, B}


def test_unknown_address_is_ignored() -> None:
    pool = Pool([A], POLICY)
    assert pool.record(B.address, False, "timeout") is None


def test_priority_two_only_while_no_priority_one_is_up() -> None:
    pool = Pool([A, B, C], HealthPolicy(down_after=1, up_after=1))
    assert C not in pool.candidates(b"x")
    pool.record(A.address, False, "timeout")
    assert pool.candidates(b"x") == (B,)
    pool.record(B.address, False, "timeout")
    assert pool.candidates(b"x") == (C,)
    pool.record(A.address, True, "answered")
    assert pool.candidates(b"x") == (A,)


def test_none_up() -> None:
    pool = Pool([A], HealthPolicy(down_after=1, up_after=1))
    pool.record(A.address, False, "unavailable")
    assert pool.candidates(b"x") == ()
    assert not pool.any_up


def test_weights_spread_calls() -> None:
    heavy = Member(B.uri, B.address, weight=2)
    pool = Pool([A, heavy], POLICY)
    firsts = Counter(pool.candidates(c)[0].uri for c in CALL_IDS)
    share = firsts[heavy.uri] / len(CALL_IDS)
    assert 0.62 < share < 0.71, share  # 2/3 expected; 3000 draws: sd ~0.009


def test_equal_weights_spread_evenly() -> None:
    pool = Pool([A, B], POLICY)
    firsts = Counter(pool.candidates(c)[0].uri for c in CALL_IDS)
    assert 0.46 < firsts[A.uri] / len(CALL_IDS) < 0.54


def test_down_member_moves_only_its_calls() -> None:
    d = Member("sip:127.0.0.2:5070", Address(Transport.UDP, "127.0.0.2", 5070))
    pool = Pool([A, B, d], HealthPolicy(down_after=1, up_after=1))
    before = {c: pool.candidates(c)[0] for c in CALL_IDS}
    pool.record(d.address, False, "timeout")
    after = {c: pool.candidates(c)[0] for c in CALL_IDS}
    moved = [c for c in CALL_IDS if before[c] != after[c]]
    assert moved and all(before[c] == d for c in moved)


def test_candidates_list_every_member_once() -> None:
    pool = Pool([A, B], POLICY)
    for c in CALL_IDS[:50]:
        assert sorted(m.uri for m in pool.candidates(c)) == sorted([A.uri, B.uri])


def test_selection_is_stable_across_processes() -> None:
    """Not Python's salted hash(): two interpreters with different hash seeds agree."""
    code = (
        "from sipguard.proxy.pool import *\n"
        "from tests.unit.proxy.test_pool import A, B, POLICY, CALL_IDS\n"
        "p = Pool([A, B], POLICY)\n"
        "print(''.join('a' if p.candidates(c)[0] is A else 'b' for c in CALL_IDS[:200]))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        for seed in ("1", "2")
    }
    pool = Pool([A, B], POLICY)
    here = "".join("a" if pool.candidates(c)[0] is A else "b" for c in CALL_IDS[:200])
    assert outputs == {here + "\n"}
    assert "a" in here and "b" in here


def test_reconfigure_keeps_health_of_members_that_stay() -> None:
    pool = Pool([A, B], HealthPolicy(down_after=1, up_after=1))
    pool.record(A.address, False, "timeout")
    pool.reconfigure([A, C], POLICY)
    assert pool.health(A.address) is Health.DOWN
    assert pool.health(C.address) is Health.UP
    assert pool.health(B.address) is None
    assert pool.candidates(b"x") == (C,)


def test_duplicate_addresses_refused() -> None:
    with pytest.raises(ValueError, match="same address"):
        Pool([A, Member("sip:other", A.address)], POLICY)


def test_members_up() -> None:
    pool = Pool([A, B], HealthPolicy(down_after=1, up_after=1))
    pool.record(A.address, False, "timeout")
    assert members_up(pool, [A, B]) == [B]


@given(
    results=st.lists(st.booleans(), max_size=60),
    down_after=st.integers(1, 5),
    up_after=st.integers(1, 5),
)
def test_hysteresis_matches_a_model(results: list[bool], down_after: int, up_after: int) -> None:
    """Health flips exactly when the last `down_after` (`up_after`) results since the previous
    flip were all failures (successes); every flip is reported once."""
    pool = Pool([A], HealthPolicy(down_after, up_after))
    up, streak = True, 0
    for ok in results:
        change = pool.record(A.address, ok, "r")
        if ok == up:
            streak = 0
            assert change is None
            continue
        streak += 1
        if streak == (down_after if up else up_after):
            up, streak = not up, 0
            assert change is not None and change.health is (Health.UP if up else Health.DOWN)
        else:
            assert change is None
        assert (pool.health(A.address) is Health.UP) == up


@given(call_id=st.binary(max_size=64), weights=st.lists(st.integers(1, 9), min_size=1, max_size=5))
def test_selection_is_deterministic(call_id: bytes, weights: list[int]) -> None:
    members = [
        Member(f"sip:127.0.0.{i + 1}:5070", Address(Transport.UDP, f"127.0.0.{i + 1}", 5070), 1, w)
        for i, w in enumerate(weights)
    ]
    first = Pool(members, POLICY).candidates(call_id)
    assert first == Pool(list(reversed(members)), POLICY).candidates(call_id)
    assert sorted(m.uri for m in first) == sorted(m.uri for m in members)


def test_status_keeps_since_last_probe_and_streaks() -> None:
    pool = Pool([A, B], POLICY)
    [a, b] = pool.status()
    assert (a.member, a.health, a.since, a.last_probe, a.failures, a.successes) == (
        A, Health.UP, None, None, 0, 0,
    )  # fmt: skip
    for t in (10.0, 11.0, 12.0):
        pool.record(A.address, False, "timeout", t)
    pool.record(B.address, True, "answered", 12.5)
    a, b = pool.status()
    assert (a.health, a.since, a.last_probe, a.last_outcome) == (Health.DOWN, 12.0, 12.0, "timeout")
    assert (a.failures, a.successes) == (3, 0)
    assert (b.health, b.since, b.last_outcome, b.successes) == (Health.UP, None, "answered", 1)
    pool.record(A.address, True, "answered", 13.0)
    a, _ = pool.status()
    assert (a.health, a.since, a.failures, a.successes) == (Health.DOWN, 12.0, 0, 1)
    pool.record(A.address, True, "answered", 14.0)
    a, _ = pool.status()
    assert (a.health, a.since, a.last_probe) == (Health.UP, 14.0, 14.0)


def test_equal_weights_order_as_the_weighted_scores_do() -> None:
    # the shortcut for equal weights (hashes compared, no logarithm) moves no call
    members = [
        Member(f"sip:127.0.0.{i}:5060", Address(Transport.UDP, f"127.0.0.{i}", 5060))
        for i in range(1, 4)
    ]
    for count in (2, 3):
        pool = Pool(members[:count], HealthPolicy())
        for n in range(300):
            call_id = b"call-%d@client" % n
            by_score = sorted(members[:count], key=lambda m: pool._score(m, call_id), reverse=True)
            assert pool.candidates(call_id) == tuple(by_score)
