"""An operator's ban or unban through the admin API's backend reaches the other instances: it is
placed (or lifted) in the local guard and published through the state bridge; one that changes
nothing here (not banned, exempt) publishes nothing."""

from __future__ import annotations

import time

from sipguard.admin.daemon import DaemonBackend
from tests.unit.admin.conftest import NEVER_BANNED, GuardCore, Recorder, Reloader, make_settings


class Sharer:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, float]] = []

    def publish_ban(self, ip: str, until: float) -> None:
        self.published.append(("ban", ip, until))

    def publish_unban(self, ip: str) -> None:
        self.published.append(("unban", ip, 0.0))


def backend() -> tuple[DaemonBackend, GuardCore, Sharer]:
    core, sharer = GuardCore(), Sharer()
    made = DaemonBackend(Reloader(make_settings(None)), core, Recorder(), "x.yaml", share=sharer)
    return made, core, sharer


def test_ban_and_unban_are_published() -> None:
    admin, core, sharer = backend()
    record = admin.ban("203.0.113.9", 600)
    assert record is not None
    assert sharer.published == [("ban", "203.0.113.9", record.until)]
    assert 599 < record.until - time.time() <= 600
    assert admin.unban("203.0.113.9")
    assert sharer.published[1:] == [("unban", "203.0.113.9", 0.0)]
    assert not core.guard.is_banned("203.0.113.9", time.time())


def test_nothing_published_when_nothing_changed_here() -> None:
    admin, _, sharer = backend()
    assert not admin.unban("203.0.113.9")  # not banned: 404, nothing to lift elsewhere
    assert admin.ban(NEVER_BANNED, 600) is None  # exempt
    assert sharer.published == []
