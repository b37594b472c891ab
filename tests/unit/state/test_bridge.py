"""The state bridge with the in-process backend: unbans heard lift the local ban (and are told to
the observer once, on the instances that still had it); the calls exchange hands the others'
counts to the core and shares this instance's."""

from __future__ import annotations

import time
from typing import Any

from sipguard.policy.guard import BanEvent, Guard, GuardSettings, UnbanEvent
from sipguard.policy.limits import DialogKey, LimitVerdict, TrunkLimiter
from sipguard.proxy.actions import Question
from sipguard.settings import StateSettings, TrunkLimits
from sipguard.state import bridge as bridge_module
from sipguard.state.bridge import StateBridge
from sipguard.state.memory import MemoryState
from tests.polling import wait_for_async


class SmallCore:
    """The core's side of the bridge over a real guard and trunk limiter."""

    def __init__(self) -> None:
        self.questions: list[Question] = []
        self.guard = Guard(GuardSettings(ban_failures=2))
        self.limiter = TrunkLimiter()
        self.limiter.configure({"capped": TrunkLimits(concurrent_calls=2), "open": TrunkLimits()})

    def shared_failures(self, ip: str, count: int, now: float) -> BanEvent | None:
        return self.guard.shared_ban(ip, count, now)

    def apply_ban(self, ip: str, until: float, now: float) -> BanEvent | None:
        return self.guard.ban_until(ip, until, now)

    def unban(self, ip: str) -> UnbanEvent | None:
        return self.guard.unban(ip)

    def shared_calls(self) -> dict[str, int]:
        return self.limiter.capped()

    def set_remote_calls(self, counts: dict[str, int]) -> None:
        self.limiter.set_remote(counts)


class Observer:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def banned(self, event: Any) -> None:
        self.events.append(event)

    def state_outage(self, operation: str, detail: str) -> None:
        pass

    def state_errors(self, count: int) -> None:
        pass


class Remote(MemoryState):
    """The in-process backend, with other instances holding calls (what Redis would answer)."""

    def __init__(self, settings: StateSettings) -> None:
        super().__init__(settings)
        self.others: dict[str, int] | None = {"capped": 2}
        self.sent: list[dict[str, int]] = []

    async def share_calls(
        self, instance: str, counts: dict[str, int], ttl: float
    ) -> dict[str, int] | None:
        self.sent.append(dict(counts))
        return None if self.others is None else dict(self.others)


async def test_unban_heard_lifts_the_local_ban_and_is_told_once() -> None:
    core, observer = SmallCore(), Observer()
    bridge = StateBridge(MemoryState(StateSettings()), core, lambda *a: None, observer)
    await bridge.start()
    try:
        bridge.publish_ban("203.0.113.9", time.time() + 600)
        await wait_for_async(lambda: core.guard.is_banned("203.0.113.9", time.time()), 2, "ban")
        bridge.publish_unban("203.0.113.9")
        await wait_for_async(
            lambda: not core.guard.is_banned("203.0.113.9", time.time()), 2, "unban"
        )
        # heard again (as every instance hears its own): nothing left to lift, nothing told
        assert await bridge.state.publish_unban("203.0.113.9")
        assert [type(e) for e in observer.events] == [BanEvent, UnbanEvent]
    finally:
        await bridge.close()


async def test_calls_exchange_counts_the_others_against_the_cap(monkeypatch: Any) -> None:
    monkeypatch.setattr(bridge_module, "CALLS_SYNC", 0.01)
    core = SmallCore()
    assert core.limiter.admit_call("capped", DialogKey(b"c1", b"t"), b"b1", 0.0).admitted
    remote = Remote(StateSettings())
    bridge = StateBridge(remote, core, lambda *a: None, Observer())
    await bridge.start()
    try:
        await wait_for_async(lambda: remote.sent, 2, "one exchange")
        assert remote.sent[0] == {"capped": 1}  # only capped trunks, this instance's own
        usage = core.limiter.usage("capped")
        assert usage is not None and usage.remote == 2
        refused = core.limiter.admit_call("capped", DialogKey(b"c2", b"t"), b"b2", 0.0)
        assert refused.verdict is LimitVerdict.CONCURRENT_CALLS
    finally:
        await bridge.close()


async def test_others_count_as_none_once_the_state_is_unavailable_for_a_ttl(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(bridge_module, "CALLS_SYNC", 0.01)
    monkeypatch.setattr(bridge_module, "CALLS_TTL", 0.1)
    core = SmallCore()
    remote = Remote(StateSettings())
    bridge = StateBridge(remote, core, lambda *a: None, Observer())
    await bridge.start()

    def remote_calls() -> int:
        usage = core.limiter.usage("capped")
        return -1 if usage is None else usage.remote

    try:
        await wait_for_async(lambda: remote_calls() == 2, 2, "the others' calls")
        remote.others = None  # unavailable from now on
        await wait_for_async(lambda: remote_calls() == 0, 2, "the stale view dropped")
        assert len(remote.sent) >= 2
    finally:
        await bridge.close()
