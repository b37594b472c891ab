"""Per-trunk limits: token buckets, calls in progress keyed by dialog, release on every end.

Time is a plain float handed in; nothing here sleeps.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.policy.limits import (
    ADMIT,
    BURST_SECONDS,
    SETUP_TIMEOUT,
    Decision,
    DialogKey,
    LimitVerdict,
    Released,
    ReleaseReason,
    TrunkLimiter,
)
from sipguard.settings import TrunkLimits

ACME = "acme"
OTHER = "other"


def limiter(**limits: float | int | None) -> TrunkLimiter:
    result = TrunkLimiter()
    result.configure({ACME: TrunkLimits(**limits), OTHER: TrunkLimits()})  # type: ignore[arg-type]
    return result


def key(n: int) -> DialogKey:
    return DialogKey(b"call-%d@pbx" % n, b"caller-%d" % n)


def call(lim: TrunkLimiter, n: int, now: float, trunk: str = ACME) -> Decision:
    return lim.admit_call(trunk, key(n), b"z9hG4bK-%d" % n, now)


# -- calls per second ---------------------------------------------------------------------------


def test_calls_per_second_burst_then_rate() -> None:
    lim = limiter(calls_per_second=10)
    burst = int(10 * BURST_SECONDS)
    assert [call(lim, n, 0.0) for n in range(burst)] == [ADMIT] * burst
    refused = call(lim, burst, 0.0)
    assert refused == Decision(LimitVerdict.CALLS_PER_SECOND, 1)
    assert not refused.admitted
    # 0.1 s later one token is back, and only one.
    assert call(lim, 100, 0.1) == ADMIT
    assert call(lim, 101, 0.1).verdict is LimitVerdict.CALLS_PER_SECOND


def test_calls_per_second_sustained_30_per_second_admits_10() -> None:
    lim = limiter(calls_per_second=10)
    admitted = sum(call(lim, n, n / 30).admitted for n in range(30 * 20))  # 20 s at 30/s
    # 10/s for 20 s plus the 2 s burst, give or take the token in flight.
    assert 10 * 20 + 20 - 1 <= admitted <= 10 * 20 + 20 + 1
    usage = lim.usage(ACME)
    assert usage is not None
    assert usage.calls_admitted == admitted
    assert usage.refused[LimitVerdict.CALLS_PER_SECOND] == 600 - admitted


def test_retry_after_is_the_wait_for_a_token_in_whole_seconds() -> None:
    lim = limiter(calls_per_second=0.25)  # burst max(1, 0.5) = 1 token
    assert call(lim, 0, 0.0) == ADMIT
    assert call(lim, 1, 0.0) == Decision(LimitVerdict.CALLS_PER_SECOND, 4)
    assert call(lim, 2, 2.5) == Decision(LimitVerdict.CALLS_PER_SECOND, 2)
    assert call(lim, 3, 4.0) == ADMIT


def test_clock_stepping_back_mints_no_tokens() -> None:
    lim = limiter(calls_per_second=1)
    assert [call(lim, n, 100.0).admitted for n in range(3)] == [True, True, False]
    assert not call(lim, 3, 50.0).admitted
    assert not call(lim, 4, 100.5).admitted
    assert call(lim, 5, 101.0).admitted


def test_other_trunk_unaffected() -> None:
    lim = limiter(calls_per_second=1, concurrent_calls=1)
    assert call(lim, 0, 0.0) == ADMIT
    assert not call(lim, 1, 0.0).admitted
    assert all(call(lim, 100 + n, 0.0, OTHER) == ADMIT for n in range(1000))
    assert lim.active(OTHER) == 1000
    assert lim.admit_call("unknown", key(1), b"b", 0.0) == ADMIT
    assert lim.active("unknown") == 0
    assert lim.usage("unknown") is None


# -- registrations per second -------------------------------------------------------------------


def test_registrations_per_second() -> None:
    lim = limiter(registrations_per_second=5)
    results = [lim.admit_registration(ACME, 0.0) for _ in range(11)]
    assert results[:10] == [ADMIT] * 10
    assert results[10] == Decision(LimitVerdict.REGISTRATIONS_PER_SECOND, 1)
    assert lim.admit_registration(ACME, 0.2) == ADMIT
    # Registrations and calls have separate buckets, and registrations hold no call slot.
    assert call(lim, 0, 0.2) == ADMIT
    assert lim.admit_registration(OTHER, 0.0) == ADMIT
    assert lim.admit_registration("unknown", 0.0) == ADMIT
    usage = lim.usage(ACME)
    assert usage is not None
    assert (usage.registrations_admitted, usage.calls_admitted, usage.active) == (11, 1, 1)


# -- concurrent calls ---------------------------------------------------------------------------


def test_sixth_call_refused_until_a_bye() -> None:
    lim = limiter(concurrent_calls=5)
    for n in range(5):
        assert call(lim, n, 0.0) == ADMIT
        lim.established(key(n), b"callee-%d" % n, 0.5)
    sixth = call(lim, 5, 1.0)
    assert sixth == Decision(LimitVerdict.CONCURRENT_CALLS, None)
    assert lim.active(ACME) == 5
    assert lim.ended(b"call-2@pbx", b"caller-2", b"callee-2") == ACME  # the caller's BYE
    assert lim.active(ACME) == 4
    assert call(lim, 5, 2.0) == ADMIT
    usage = lim.usage(ACME)
    assert usage is not None
    assert usage.refused[LimitVerdict.CONCURRENT_CALLS] == 1


def test_bye_from_the_callee_side_releases() -> None:
    lim = limiter(concurrent_calls=1)
    call(lim, 0, 0.0)
    lim.established(key(0), b"callee-0", 1.0)
    # The upstream's BYE: From is the callee, To the caller (RFC 3261 §12.2.1.1).
    assert lim.ended(b"call-0@pbx", b"callee-0", b"caller-0") == ACME
    assert lim.active(ACME) == 0


def test_bye_with_a_foreign_tag_does_not_release() -> None:
    lim = limiter(concurrent_calls=1)
    call(lim, 0, 0.0)
    lim.established(key(0), b"callee-0", 1.0)
    assert lim.ended(b"call-0@pbx", b"caller-0", b"someone-else") is None
    assert lim.ended(b"call-9@pbx", b"caller-0", b"callee-0") is None
    assert lim.active(ACME) == 1


def test_bye_of_an_early_dialog_releases() -> None:
    lim = limiter(concurrent_calls=1)
    call(lim, 0, 0.0)
    assert lim.ended(b"call-0@pbx", b"caller-0", b"early-callee") == ACME
    assert lim.active(ACME) == 0


def test_failed_invite_and_cancel_release_a_call_being_set_up() -> None:
    lim = limiter(concurrent_calls=2)
    call(lim, 0, 0.0)
    call(lim, 1, 0.0)
    assert lim.failed(key(0)) == ACME  # e.g. 486 from the upstream
    assert lim.failed(key(1)) == ACME  # CANCEL
    assert lim.failed(key(1)) is None  # the 487 that follows the CANCEL
    assert lim.active(ACME) == 0


def test_failed_reinvite_does_not_end_an_answered_call() -> None:
    lim = limiter(concurrent_calls=1)
    call(lim, 0, 0.0)
    lim.established(key(0), b"callee-0", 1.0)
    assert lim.failed(key(0)) is None  # a 491 to a re-INVITE, or a late CANCEL
    assert lim.active(ACME) == 1


def test_retransmission_counts_once() -> None:
    lim = limiter(concurrent_calls=1, calls_per_second=1)  # burst 2
    assert call(lim, 0, 0.0) == ADMIT
    assert call(lim, 0, 0.5) == ADMIT  # same branch: Timer A retransmission
    assert call(lim, 0, 1.5) == ADMIT
    usage = lim.usage(ACME)
    assert usage is not None
    assert (usage.active, usage.calls_admitted) == (1, 1)
    # A new INVITE transaction of the same call (after the upstream's 407) uses a token and
    # no second slot.
    assert lim.admit_call(ACME, key(0), b"z9hG4bK-new", 1.5) == ADMIT
    usage = lim.usage(ACME)
    assert usage is not None
    assert (usage.active, usage.calls_admitted) == (1, 2)


def test_zero_concurrent_calls_refuses_every_call() -> None:
    lim = limiter(concurrent_calls=0)
    assert call(lim, 0, 0.0).verdict is LimitVerdict.CONCURRENT_CALLS
    assert lim.admit_registration(ACME, 0.0) == ADMIT


# -- no stuck counter ---------------------------------------------------------------------------


def test_lost_bye_released_after_max_call_duration() -> None:
    lim = limiter(concurrent_calls=1, max_call_duration=3)
    call(lim, 0, 0.0)
    lim.established(key(0), b"callee-0", 1.0)
    assert lim.expire(3.9) == []
    assert lim.active(ACME) == 1
    assert not call(lim, 1, 3.9).admitted
    assert lim.expire(4.0) == [Released(ACME, b"call-0@pbx", ReleaseReason.MAX_CALL_DURATION)]
    assert lim.active(ACME) == 0
    assert call(lim, 1, 4.0) == ADMIT
    # The late BYE of the released call changes nothing.
    assert lim.ended(b"call-0@pbx", b"caller-0", b"callee-0") is None
    assert lim.active(ACME) == 1


def test_unanswered_call_released_after_setup_timeout() -> None:
    lim = limiter(concurrent_calls=1)
    call(lim, 0, 0.0)
    assert lim.expire(SETUP_TIMEOUT - 0.1) == []
    assert lim.expire(SETUP_TIMEOUT) == [Released(ACME, b"call-0@pbx", ReleaseReason.SETUP_TIMEOUT)]
    assert lim.active(ACME) == 0


def test_setup_never_counts_longer_than_max_call_duration() -> None:
    lim = limiter(concurrent_calls=1, max_call_duration=2)
    call(lim, 0, 0.0)
    assert [r.reason for r in lim.expire(2.0)] == [ReleaseReason.SETUP_TIMEOUT]


def test_answer_after_release_does_not_count_again() -> None:
    lim = limiter(concurrent_calls=1, max_call_duration=2)
    call(lim, 0, 0.0)
    lim.expire(2.0)
    lim.established(key(0), b"callee-0", 3.0)  # late: the count never comes back
    lim.established(key(1), b"callee-1", 3.0)  # never admitted (a re-INVITE's 2xx)
    assert lim.active(ACME) == 0
    assert lim.sizes().calls == 0
    assert lim.expire(100.0) == []


def test_second_2xx_does_not_extend_the_call() -> None:
    lim = limiter(max_call_duration=10)
    call(lim, 0, 0.0)
    lim.established(key(0), b"callee-0", 1.0)
    lim.established(key(0), b"callee-fork", 5.0)  # a retransmitted or forked 2xx
    assert len(lim.expire(11.0)) == 1
    assert lim.ended(b"call-0@pbx", b"caller-0", b"callee-0") is None


# -- memory -------------------------------------------------------------------------------------


def test_uncapped_trunks_share_a_bounded_table() -> None:
    lim = TrunkLimiter(max_uncapped=3)
    lim.configure({ACME: TrunkLimits(concurrent_calls=2), OTHER: TrunkLimits()})
    assert all(call(lim, n, 0.0, OTHER) == ADMIT for n in range(5))
    assert lim.active(OTHER) == 3
    assert lim.sizes().untracked == 2
    # A capped trunk is always counted exactly, table full or not.
    assert [call(lim, 10 + n, 0.0).verdict for n in range(3)] == [
        LimitVerdict.ADMITTED,
        LimitVerdict.ADMITTED,
        LimitVerdict.CONCURRENT_CALLS,
    ]
    assert lim.sizes().calls == 5


def test_heap_stays_proportional_to_calls() -> None:
    lim = limiter(max_call_duration=100)
    for n in range(10_000):
        call(lim, n, float(n))
        lim.established(key(n), b"callee", float(n))
        lim.ended(b"call-%d@pbx" % n, b"caller-%d" % n, b"callee")
    assert lim.sizes().calls == 0
    assert len(lim._deadlines) <= 64 + 2


# -- reload -------------------------------------------------------------------------------------


def test_reload_keeps_calls_and_unchanged_buckets() -> None:
    lim = limiter(calls_per_second=1, concurrent_calls=3, registrations_per_second=1)
    call(lim, 0, 0.0)
    call(lim, 1, 0.0)
    assert not call(lim, 2, 0.0).admitted  # bucket empty
    assert [lim.admit_registration(ACME, 0.0).admitted for _ in range(3)] == [True, True, False]
    lim.configure(
        {ACME: TrunkLimits(calls_per_second=1, concurrent_calls=2, registrations_per_second=1)}
    )
    assert not lim.admit_registration(ACME, 0.0).admitted  # same rate: same (empty) bucket
    assert lim.active(ACME) == 2
    assert not call(lim, 2, 0.0).admitted  # same rate: same (empty) bucket
    lim.configure({ACME: TrunkLimits(calls_per_second=5, concurrent_calls=2)})
    assert call(lim, 2, 0.0).verdict is LimitVerdict.CONCURRENT_CALLS  # new bucket, cap 2
    lim.configure({ACME: TrunkLimits(concurrent_calls=3)})
    assert call(lim, 2, 0.0) == ADMIT  # no rate any more
    # Registrations unlimited now.
    assert all(lim.admit_registration(ACME, 0.0).admitted for _ in range(10))


def test_removed_trunk_kept_while_calls_last() -> None:
    lim = limiter(concurrent_calls=3)
    call(lim, 0, 0.0)
    lim.configure({})
    assert lim.active(ACME) == 1  # still counted until it ends
    assert lim.usage(OTHER) is None  # no calls: forgotten
    assert call(lim, 1, 1.0) == ADMIT  # no limits configured for it any more: not counted
    assert lim.active(ACME) == 1
    assert lim.ended(b"call-0@pbx", b"caller-0", b"x") == ACME
    assert lim.usage(ACME) is None  # forgotten with its last call


def test_trunk_back_in_the_config_finds_its_calls() -> None:
    lim = limiter(concurrent_calls=1)
    call(lim, 0, 0.0)
    lim.configure({})
    lim.configure({ACME: TrunkLimits(concurrent_calls=1)})
    assert call(lim, 1, 2.0).verdict is LimitVerdict.CONCURRENT_CALLS


@pytest.mark.parametrize(
    "limits",
    [
        {"calls_per_second": 0},
        {"registrations_per_second": -1},
        {"concurrent_calls": -1},
        {"max_call_duration": 0},
    ],
)
def test_settings_refuse_nonsense(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrunkLimits(**limits)  # type: ignore[arg-type]


# -- properties ---------------------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["invite", "retransmit", "answer", "bye", "bye_callee", "fail", "tick"]),
        st.sampled_from([ACME, OTHER]),
        st.integers(0, 7),  # which call
        st.floats(0, 30, allow_nan=False),  # seconds since the previous event
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(0, 4), st.sampled_from([None, 0.5, 3.0]))
def test_counts_match_the_table_and_never_stick(
    events: list[tuple[str, str, int, float]], cap: int, rate: float | None
) -> None:
    lim = TrunkLimiter(max_uncapped=4)
    lim.configure(
        {
            ACME: TrunkLimits(concurrent_calls=cap, calls_per_second=rate, max_call_duration=60),
            OTHER: TrunkLimits(max_call_duration=90),
        }
    )
    now = 0.0
    for kind, trunk, n, step in events:
        now += step
        if kind in ("invite", "retransmit"):
            branch = b"same" if kind == "retransmit" else b"b%f" % now
            lim.admit_call(trunk, key(n), branch, now)
        elif kind == "answer":
            lim.established(key(n), b"callee-%d" % n, now)
        elif kind == "bye":
            lim.ended(b"call-%d@pbx" % n, b"caller-%d" % n, b"callee-%d" % n)
        elif kind == "bye_callee":
            lim.ended(b"call-%d@pbx" % n, b"callee-%d" % n, b"caller-%d" % n)
        elif kind == "fail":
            lim.failed(key(n))
        else:
            lim.expire(now)
        by_trunk = {ACME: 0, OTHER: 0}
        for entry in lim._calls.values():
            by_trunk[entry.trunk.name] += 1
        assert lim.active(ACME) == by_trunk[ACME] <= cap
        assert lim.active(OTHER) == by_trunk[OTHER] <= 4
    # Whatever happened, everything is released once the longest deadline has passed.
    lim.expire(now + max(SETUP_TIMEOUT, 90.0))
    assert lim.active(ACME) == lim.active(OTHER) == lim.sizes().calls == 0


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.5, 50, allow_nan=False),
    st.lists(st.floats(0, 0.5, allow_nan=False), min_size=1, max_size=300),
)
def test_bucket_never_admits_more_than_burst_plus_rate(rate: float, gaps: list[float]) -> None:
    lim = TrunkLimiter()
    lim.configure({ACME: TrunkLimits(calls_per_second=rate)})
    now = 0.0
    times: list[float] = []
    for n, gap in enumerate(gaps):
        now += gap
        decision = call(lim, n, now)
        if decision.admitted:
            times.append(now)
        else:
            assert decision.retry_after is not None and decision.retry_after >= 1
    burst = max(1.0, rate * BURST_SECONDS)
    # In every window [t_i, t_j] at most burst + rate * (t_j - t_i) calls were admitted.
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6
