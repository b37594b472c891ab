"""Well-known SIP scanners, recognised by their User-Agent.

Owns: `ScannerList`, the matcher built from the configured names (`protection.scanner_user_agents`,
whose default list is `sipguard.settings.DEFAULT_SCANNER_USER_AGENTS`): one alternation over the
ASCII-lowered bytes (measured ~2x faster than one `in` per name, and faster than re.IGNORECASE).

Never does: parse SIP (the core hands over the raw User-Agent bytes), decide what happens to a
scanner (the core drops it), read a clock or log. Stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class ScannerList:
    """The configured scanner names, compiled once (at start and at each reload)."""

    __slots__ = ("_scanners",)

    def __init__(self, user_agents: Iterable[str]) -> None:
        names = sorted({ua.encode("ascii").lower() for ua in user_agents})
        scanners = re.compile(b"|".join(re.escape(name) for name in names)) if names else None
        self._scanners: re.Pattern[bytes] | None = scanners

    def is_scanner(self, user_agent: bytes | None) -> bool:
        """True if the User-Agent contains a configured scanner name (ASCII case-insensitive)."""
        if not user_agent or self._scanners is None:
            return False
        return self._scanners.search(user_agent.lower()) is not None
