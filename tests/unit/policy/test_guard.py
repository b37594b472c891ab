"""The edge guard: bans after failed digests, token buckets, scanner User-Agents, bounded tables.

Time is a plain float handed in; nothing here sleeps.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from types import FrameType

import pytest

from sipguard.policy.guard import (
    BanEvent,
    Guard,
    GuardSettings,
    UnbanEvent,
    UnbanReason,
)
from sipguard.settings import Protection

IP = "203.0.113.7"
OTHER = "198.51.100.9"


def fail(guard: Guard, ip: str, times: list[float]) -> list[BanEvent | None]:
    return [guard.record_failure(ip, t) for t in times]


# -- bans -----------------------------------------------------------------------------------


def test_bruteforce_ban() -> None:
    guard = Guard(GuardSettings())
    results = fail(guard, IP, [0.0, 1.0, 2.0, 3.0])
    assert results == [None] * 4
    assert not guard.is_banned(IP, 3.5)
    event = guard.record_failure(IP, 4.0)
    assert event == BanEvent(IP, 604.0, 5)
    assert guard.is_banned(IP, 4.0)
    assert guard.is_banned(IP, 603.9)
    assert not guard.is_banned(OTHER, 4.0)
    assert guard.active_bans() == 1
    # Failures while banned (should the core still report them) do not extend the ban.
    assert guard.record_failure(IP, 10.0) is None


def test_failures_spread_over_more_than_window_do_not_ban() -> None:
    guard = Guard(GuardSettings())
    # 5 failures 15 s apart span 60 s: never 5 within one 60 s window (a failure counts while
    # younger than the window).
    assert fail(guard, IP, [0.0, 15.0, 30.0, 45.0, 60.0]) == [None] * 5
    # ...and a slow guesser at 4 per window is never banned, however long it keeps going.
    assert all(e is None for e in fail(guard, IP, [75.0 + 15.0 * i for i in range(100)]))
    assert not guard.is_banned(IP, 2000.0)


def test_burst_after_old_failures_bans() -> None:
    guard = Guard(GuardSettings())
    # Sliding, not fixed: a window anchored at the first failure (0 s) would restart at 61 s and
    # miss the 5 failures within 59-61.5 s.
    assert fail(guard, IP, [0.0, 59.0, 59.0, 59.0, 61.0]) == [None] * 5
    assert guard.record_failure(IP, 61.5) == BanEvent(IP, 661.5, 5)


def test_ban_expires() -> None:
    guard = Guard(GuardSettings(ban_duration=100.0))
    fail(guard, IP, [0.0] * 5)
    fail(guard, OTHER, [10.0] * 5)
    assert guard.active_bans() == 2
    assert guard.expire(50.0) == []
    # The sweep reports the unban...
    assert guard.expire(100.0) == [UnbanEvent(IP, 100.0, UnbanReason.EXPIRED)]
    assert not guard.is_banned(IP, 100.0)
    assert guard.active_bans() == 1
    # ...and so does the lazy check, through the next sweep.
    assert not guard.is_banned(OTHER, 110.0)
    assert guard.active_bans() == 0
    assert guard.expire(111.0) == [UnbanEvent(OTHER, 110.0, UnbanReason.EXPIRED)]
    assert guard.expire(112.0) == []
    # Counting starts again from zero after a ban.
    assert fail(guard, IP, [200.0] * 4) == [None] * 4
    assert guard.record_failure(IP, 200.0) is not None


def test_never_ban_exempt() -> None:
    office = {"192.0.2.10"}
    guard = Guard(GuardSettings(never_ban=lambda ip: ip in office))
    assert all(e is None for e in fail(guard, "192.0.2.10", [float(i) for i in range(50)]))
    assert not guard.is_banned("192.0.2.10", 50.0)
    assert guard.sizes().exempted > 0  # counted, not banned
    assert guard.ban("192.0.2.10", 50.0) is None
    # A set-like is accepted too.
    guard = Guard(GuardSettings(never_ban=frozenset({"192.0.2.10"})))
    assert fail(guard, "192.0.2.10", [0.0] * 5) == [None] * 5
    assert fail(guard, IP, [0.0] * 5)[-1] is not None


def test_success_does_not_reset_failures() -> None:
    guard = Guard(GuardSettings(proven_for=0.0))
    # An attacker with one valid account interleaving a good login gains nothing.
    for t in (0.0, 1.0, 2.0, 3.0):
        guard.record_failure(IP, t)
        guard.record_success(IP, t)
    assert guard.record_failure(IP, 4.0) is not None


def test_nat_office_one_misconfigured_phone_not_banned() -> None:
    guard = Guard(GuardSettings())
    # 50 good phones refreshing, one bad phone retrying every 10 s (6 failures a minute, which
    # would ban an unproven source) for an hour.
    for second in range(3600):
        now = float(second)
        if second % 12 == 0:
            guard.record_success(IP, now)
        if second % 10 == 0:
            assert guard.record_failure(IP, now) is None
        assert not guard.is_banned(IP, now)
    # A guesser hiding behind the same proven address is still banned.
    assert any(fail(guard, IP, [3600.0 + i / 10 for i in range(10)]))
    assert guard.is_banned(IP, 3601.0)


def test_proven_threshold_follows_ban_failures() -> None:
    guard = Guard(GuardSettings(ban_failures=20))  # valid alone: proven threshold becomes 40
    guard.record_success(IP, 0.0)
    assert not any(fail(guard, IP, [1.0] * 39))
    assert guard.record_failure(IP, 1.0) == BanEvent(IP, 601.0, 40)


def test_proven_status_lapses() -> None:
    guard = Guard(GuardSettings(proven_for=30.0))
    guard.record_success(IP, 0.0)
    assert fail(guard, IP, [100.0] * 5)[-1] is not None


def test_manual_ban_and_reconfigure() -> None:
    guard = Guard()
    assert guard.ban(IP, 0.0, duration=5.0) == BanEvent(IP, 5.0, 0)
    assert guard.ban(OTHER, 0.0, duration=6.0) == BanEvent(OTHER, 6.0, 0)
    assert guard.is_banned(IP, 4.0)
    for ip in ("192.0.2.1", "192.0.2.2"):
        guard.record_failure(ip, 0.0)
        guard.record_success(ip, 0.0)
    # A reload to a lower cap trims every table; the ban closest to its end goes first.
    guard.configure(GuardSettings(max_tracked_sources=1))
    assert guard.settings.max_tracked_sources == 1
    sizes = guard.sizes()
    assert (sizes.bans, sizes.failures, sizes.proven, sizes.evicted) == (1, 1, 1, 3)
    assert guard.expire(1.0) == [UnbanEvent(IP, 5.0, UnbanReason.EVICTED)]
    # A full ban table makes room for the newest offender and reports the evicted ban.
    guard.ban(IP, 1.0)
    assert guard.expire(2.0) == [UnbanEvent(OTHER, 6.0, UnbanReason.EVICTED)]
    assert guard.is_banned(IP, 2.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ban_failures": 0},
        {"ban_failures_proven": 2},
        {"ban_window": 0.0},
        {"rate": 0.0},
        {"burst": 0},
        {"max_tracked_sources": 0},
        {"scanner_user_agents": ("",)},
    ],
)
def test_settings_reject_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="guard"):
        GuardSettings(**kwargs)  # type: ignore[arg-type]


# -- rate limit -----------------------------------------------------------------------------


def test_rate_limit_bucket_refill() -> None:
    guard = Guard(GuardSettings(rate=10.0, burst=20))
    assert all(guard.allow_request(IP, 0.0) for _ in range(20))
    assert not guard.allow_request(IP, 0.0)
    assert guard.allow_request(OTHER, 0.0)  # per source
    # 10 tokens/s: 0.5 s later five more, not six.
    assert sum(guard.allow_request(IP, 0.5) for _ in range(6)) == 5
    # A long idle period refills up to the burst, never beyond.
    assert sum(guard.allow_request(IP, 1000.0) for _ in range(30)) == 20
    # A clock stepping back mints nothing.
    assert not guard.allow_request(IP, 500.0)
    assert not guard.allow_request(IP, 1000.0, cost=21.0)


def test_nat_office_not_rate_limited() -> None:
    guard = Guard(GuardSettings())
    refused = 0
    # 200 phones behind one NAT, first REGISTERs spread over 5 s after an outage; each 401 is
    # also crossed by one UDP retransmission (Timer E, T1 = 0.5 s): 400 unauthenticated requests.
    # The credentialed REGISTER that follows is not rate limited (the core only asks for
    # requests it would challenge).
    arrivals = sorted([i * 0.025 for i in range(200)] + [i * 0.025 + 0.5 for i in range(200)])
    refused += sum(not guard.allow_request(IP, t) for t in arrivals)
    # Worst case: all 200 phones, each with its retransmission, within the same instant.
    guard = Guard(GuardSettings())
    refused += sum(not guard.allow_request(IP, 0.0) for _ in range(400))
    assert refused == 0


def test_flood_from_one_source_limited() -> None:
    guard = Guard(GuardSettings())
    # 1000 requests/s for 10 s from one address: the 400 burst plus 50/s.
    allowed = sum(guard.allow_request(IP, i / 1000) for i in range(10_000))
    assert 850 <= allowed <= 951
    assert guard.allow_request(OTHER, 10.0)  # others unaffected


def test_never_ban_not_rate_limited() -> None:
    guard = Guard(GuardSettings(never_ban={IP}, burst=1))
    assert all(guard.allow_request(IP, 0.0) for _ in range(100))
    assert guard.allow_request(OTHER, 0.0)
    assert not guard.allow_request(OTHER, 0.0)


# -- scanners -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "scanner"),
    [
        (b"friendly-scanner", True),
        (b"Friendly-Scanner/1.8", True),
        (b"sipvicious 0.3.4", True),
        (b"SIPVICIOUS", True),
        (b"VaxSIPUserAgent/3.1", True),
        (b"vaxsipuseragent", True),
        (b"sipcli/v1.8", True),
        (b"pplsip", True),
        (b"x sip-scan y", True),
        (b"Yealink SIP-T46S 66.86.0.15", False),
        (b"Asterisk PBX 20.5.0", False),
        (b"friendly scanner", False),
        (b"\xff\xfe\x00sipvicious\x00", True),
        (b"", False),
        (None, False),
    ],
)
def test_scanner_user_agent_dropped(user_agent: bytes | None, scanner: bool) -> None:
    assert Guard().is_scanner(user_agent) is scanner


def test_scanner_list_configurable() -> None:
    guard = Guard(GuardSettings(scanner_user_agents=()))
    assert not guard.is_scanner(b"friendly-scanner")
    guard = Guard(GuardSettings(scanner_user_agents=("EvilTool",)))
    assert guard.is_scanner(b"eviltool 2")


def test_reload_replaces_scanner_list_and_forgets_buckets() -> None:
    guard = Guard(GuardSettings(burst=1))
    assert guard.allow_request(IP, 0.0)
    assert not guard.allow_request(IP, 0.0)
    guard.configure(GuardSettings(burst=1, scanner_user_agents=("EvilTool",)))
    assert guard.is_scanner(b"EvilTool/2") and not guard.is_scanner(b"friendly-scanner")
    assert guard.allow_request(IP, 0.0)  # a forgotten bucket is a full one


# -- cost per message -----------------------------------------------------------------------


def _python_calls(question: Callable[[], object]) -> list[str]:
    """The Python functions that answering `question` enters (C functions left out)."""
    entered: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            entered.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        question()
    finally:
        sys.setprofile(None)
    return entered[1:]  # the lambda that asks


def test_per_message_questions_take_one_call() -> None:
    """Core.handle asks is_banned of every message and admission is_scanner of every request
    (allow_request of every challenge): the guard answers each in one Python call, its part's."""
    guard = Guard()
    guard.allow_request(IP, 0.0)  # the source has a bucket, as after its first challenge
    assert _python_calls(lambda: guard.is_banned(IP, 0.0)) == ["Bans.is_banned"]
    assert _python_calls(lambda: guard.is_scanner(b"Yealink")) == ["ScannerList.is_scanner"]
    assert _python_calls(lambda: guard.allow_request(IP, 1.0)) == ["Throttle.allow_request"]


# -- memory bounds --------------------------------------------------------------------------


def _source(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def test_guard_memory_bounded_under_source_flood() -> None:
    cap = 100_000
    guard = Guard(GuardSettings(max_tracked_sources=cap, ban_failures=1, ban_failures_proven=1))
    peak = 0
    for i in range(300_000):
        ip = _source(i)
        now = i / 10_000  # 10 000 new sources per second, for 30 s
        guard.allow_request(ip, now)
        guard.record_success(ip, now)
        assert guard.record_failure(ip, now) is not None
        if i % 1000 == 0:
            sizes = guard.sizes()
            peak = max(peak, sizes.bans, sizes.failures, sizes.proven, sizes.buckets)
    sizes = guard.sizes()
    assert max(peak, sizes.bans, sizes.proven, sizes.buckets) == cap
    assert sizes.evicted >= 3 * 200_000
    # Evicted bans are reported as unbans, and that queue is bounded too.
    assert len(guard.expire(30.0)) <= cap
    # The bans still held are the newest ones.
    assert guard.is_banned(_source(299_999), 30.0)
    assert not guard.is_banned(_source(0), 30.0)


def test_failure_table_bounded() -> None:
    guard = Guard(GuardSettings(max_tracked_sources=1000))
    for i in range(300_000):
        guard.record_failure(_source(i), i / 10_000)
    assert guard.sizes().failures == 1000


def test_expire_forgets_idle_state() -> None:
    guard = Guard(GuardSettings(rate=10.0, burst=20))
    for i in range(100):
        guard.allow_request(_source(i), 0.0)
        guard.record_failure(_source(i), 0.0)
        guard.record_success(_source(i), 0.0)
    guard.allow_request(IP, 1.9)
    guard.expire(1.9)
    assert guard.sizes().buckets == 101  # 1.9 s idle: buckets not yet full again
    guard.expire(2.0)
    assert guard.sizes().buckets == 1  # full buckets are forgotten; IP seen at 1.9 stays
    assert guard.sizes().failures == 100
    guard.expire(60.0)
    assert guard.sizes().failures == 0
    assert guard.sizes().proven == 100
    guard.expire(600.0)
    assert guard.sizes().proven == 0
    assert guard.sizes().buckets == 0


# -- the admin API's view -------------------------------------------------------------------


def test_bans_listed_with_since_and_failures() -> None:
    from sipguard.policy.guard import BanRecord

    guard = Guard(GuardSettings(ban_failures=2))
    fail(guard, IP, [10.0, 11.0])
    assert guard.ban(OTHER, 20.0, 100.0) == BanEvent(OTHER, 120.0, 0)
    assert guard.bans(30.0) == [BanRecord(IP, 11.0, 611.0, 2), BanRecord(OTHER, 20.0, 120.0, 0)]
    assert guard.bans(130.0) == [BanRecord(IP, 11.0, 611.0, 2)]  # expired ones are not in force
    # expire() pops in insertion order and stops at the first live ban; the lazy check of the
    # shorter operator ban behind it forgets its details too.
    guard.expire(130.0)
    assert not guard.is_banned(OTHER, 130.0)
    assert guard._ban_details.keys() == {IP}
    guard.expire(700.0)
    assert guard._ban_details == {}


def test_unban_serves_the_source_at_once() -> None:
    guard = Guard(GuardSettings(ban_failures=2))
    fail(guard, IP, [0.0, 1.0])
    assert guard.is_banned(IP, 2.0)
    event = guard.unban(IP)
    assert event == UnbanEvent(IP, 601.0, UnbanReason.LIFTED)
    assert not guard.is_banned(IP, 2.0)
    assert guard.bans(2.0) == []
    assert guard.unban(IP) is None
    # The count starts again: one more failure does not ban.
    assert guard.record_failure(IP, 3.0) is None


def test_ban_details_follow_eviction_and_lazy_expiry() -> None:
    guard = Guard(GuardSettings(ban_failures=1, max_tracked_sources=2, ban_duration=10.0))
    for n, ip in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.3"]):
        guard.record_failure(ip, float(n))
    assert set(guard._ban_details) == {"192.0.2.2", "192.0.2.3"}
    assert not guard.is_banned("192.0.2.2", 50.0)
    assert set(guard._ban_details) == {"192.0.2.3"}


# -- defaults -------------------------------------------------------------------------------


def test_guard_defaults_are_the_protection_defaults() -> None:
    """A guard built without settings behaves as the operator's default `protection` section:
    every field the two share has one default, `Protection`'s."""
    guard, protection = GuardSettings(), Protection()
    shared = {f.name for f in dataclasses.fields(GuardSettings)} & {
        f.name for f in dataclasses.fields(Protection)
    }
    assert shared >= {"ban_failures", "ban_window", "ban_duration", "rate", "burst"}
    for name in shared - {"never_ban"}:  # a rule tuple there, a matcher here
        assert getattr(guard, name) == getattr(protection, name), name
