"""What a reload changed: trunk and listener names, sections, and the counts an operator checks,
for the `config_reloaded` line (never a value of a secret: a changed password shows as a changed
trunk).

Owns: `diff_settings`, `SettingsDiff`, `DIFFED_SECTIONS`. Pure: no I/O, nothing logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipguard.settings import Settings

__all__ = ["DIFFED_SECTIONS", "SettingsDiff", "diff_settings"]

# Top-level sections compared whole by `diff_settings` (trunks and listeners are itemised).
DIFFED_SECTIONS: tuple[str, ...] = (
    "upstream",
    "upstream_health",
    "auth",
    "tls",
    "metrics",
    "log",
    "limits",
    "protection",
    "state",
    "admin",
    "identity",
    "workers",
    "upstream_source_port",
)


@dataclass(frozen=True, slots=True)
class SettingsDiff:
    """What changed between two configurations: trunk and listener names, other sections, and
    the counts an operator checks after editing a whitelist or a credential."""

    trunks_added: tuple[str, ...] = ()
    trunks_removed: tuple[str, ...] = ()
    # Same name, different whitelist, credentials (a password too), algorithms or allow_open.
    trunks_changed: tuple[str, ...] = ()
    listeners_added: tuple[str, ...] = ()  # URLs
    listeners_removed: tuple[str, ...] = ()
    sections_changed: tuple[str, ...] = ()  # among DIFFED_SECTIONS
    # (before, after)
    rules: tuple[int, int] = (0, 0)  # whitelist entries over all trunks
    credentials: tuple[int, int] = (0, 0)
    listeners: tuple[int, int] = (0, 0)

    @property
    def changed(self) -> bool:
        return bool(
            self.trunks_added
            or self.trunks_removed
            or self.trunks_changed
            or self.listeners_added
            or self.listeners_removed
            or self.sections_changed
        )


def _counts(settings: Settings) -> tuple[int, int, int]:
    rules = sum(len(trunk.whitelist) for trunk in settings.trunks)
    credentials = sum(len(trunk.credentials) for trunk in settings.trunks)
    return rules, credentials, len(settings.listen)


def diff_settings(old: Settings, new: Settings) -> SettingsDiff:
    """What loading `new` in place of `old` changes (pure: no I/O, nothing logged)."""
    before = {trunk.name: trunk for trunk in old.trunks}
    after = {trunk.name: trunk for trunk in new.trunks}
    old_urls = [listener.url for listener in old.listen]
    new_urls = [listener.url for listener in new.listen]
    old_counts, new_counts = _counts(old), _counts(new)
    return SettingsDiff(
        trunks_added=tuple(name for name in after if name not in before),
        trunks_removed=tuple(name for name in before if name not in after),
        trunks_changed=tuple(
            name for name, trunk in after.items() if name in before and before[name] != trunk
        ),
        listeners_added=tuple(url for url in new_urls if url not in old_urls),
        listeners_removed=tuple(url for url in old_urls if url not in new_urls),
        sections_changed=tuple(
            name for name in DIFFED_SECTIONS if getattr(old, name) != getattr(new, name)
        ),
        rules=(old_counts[0], new_counts[0]),
        credentials=(old_counts[1], new_counts[1]),
        listeners=(old_counts[2], new_counts[2]),
    )
