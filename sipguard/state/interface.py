"""The interface of shared state (DESIGN §7): what the shell asks of a backend, and the
callbacks a backend answers through.

Owns: `SharedState` (the protocol both backends implement), `BanCallback`, `Answer`,
`ErrorCallback`. The contract of every call is in the package's docstring (`sipguard.state`).

Never does: build a backend (`sipguard.state.open_state` does), import one: the backends
import this module, the package imports them, and nothing imports back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Answer", "BanCallback", "ErrorCallback", "SharedState"]

# A ban heard from any instance: (source IP, end of the ban in epoch seconds); an end of 0 (or
# less) is an unban: the ban of that source is lifted.
BanCallback = Callable[[str, float], None]
# Receives the answer of a shared call: the value, or None when the state is unavailable.
Answer = Callable[[bool | None], None]
# An outage began (operation, short detail without secrets) or ended (operation, "").
ErrorCallback = Callable[[str, str], None]


class SharedState(Protocol):
    """What the shell needs of shared state. `None` answers mean "unavailable, decide locally"."""

    @property
    def shared(self) -> bool:
        """True when other processes see what this one writes (redis); False for memory."""
        ...

    @property
    def errors(self) -> int:
        """Calls that failed since start (for `sipguard_state_errors_total`)."""
        ...

    async def start(self, on_ban: BanCallback, on_error: ErrorCallback) -> None:
        """Connect (without waiting for the server: an outage at start is an outage like any
        other) and subscribe to bans."""
        ...

    async def close(self) -> None: ...

    async def count_nonce(self, nonce: str, nc: int, ttl: float) -> bool | None:
        """True once per (nonce, strictly increasing nc) across every instance; False for a
        replayed, decreasing or killed count; None when unavailable. `ttl`: seconds until the
        nonce expires (the entry lives that long)."""
        ...

    def count_nonce_then(self, nonce: str, nc: int, ttl: float, then: Answer) -> None:
        """`count_nonce` without a task or future per call (the hot path of the bridge): `then`
        is called from the event loop with the answer, never from inside this call."""
        ...

    async def kill_nonce(self, nonce: str, ttl: float) -> None:
        """Refuse every later use of `nonce` everywhere (best effort)."""
        ...

    async def add_failure(self, ip: str, window: float) -> int | None:
        """Count one failed authentication of `ip`; the count in the current window (which
        starts at the first failure and lasts `window` seconds), or None."""
        ...

    async def publish_ban(self, ip: str, until: float) -> bool:
        """Ban `ip` until `until` (epoch seconds) on every instance; False when unavailable."""
        ...

    async def publish_unban(self, ip: str) -> bool:
        """Lift the ban of `ip` on every instance (and forget its failures); False when
        unavailable."""
        ...

    async def share_calls(
        self, instance: str, counts: dict[str, int], ttl: float
    ) -> dict[str, int] | None:
        """Store `instance`'s calls in progress per trunk (kept `ttl` seconds); the sum per trunk
        of every other live instance's counts, or None when unavailable."""
        ...

    async def add(self, key: str, amount: int, ttl: float) -> int | None:
        """Add `amount` (may be negative) to the counter `key` (below the key prefix) and keep
        it `ttl` seconds after its last change; the new value, or None."""
        ...
