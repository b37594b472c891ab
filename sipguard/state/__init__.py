"""State shared by every worker and every host: one interface, two backends (DESIGN §7).

Owns: `SharedState`, the only way the shell reads or writes state that other sipguard processes
must see, and `open_state`, which builds the backend the config names (`state.backend`):
  memory  this process only (the default: one process, no server); `memory.MemoryState`
  redis   every worker and host sharing one Redis (redis-py asyncio + hiredis); `redis_store`

What is shared, and how (issue 15):
- nonce-count replay protection of answered challenges: `count_nonce` is one atomic call that
  accepts a strictly increasing nonce-count once, with a TTL of the nonce's lifetime; `kill_nonce`
  refuses every later use of a nonce (after a wrong answer);
- failed-authentication counters: `add_failure` counts one failure of a source in a fixed window
  and returns the count across every instance (the core decides whether that bans);
- bans: `publish_ban` stores a ban with its TTL and publishes it; every instance (this one
  included) hears it through the callback given to `on_ban` and keeps a local copy in its guard,
  so a banned source is dropped without a round trip; a subscriber that (re)connects first reads
  the bans stored while it was away;
- counters for other features (per-trunk call counts across instances: `add` with a TTL).

Contract of every call: it never raises for an outage. A backend that cannot answer (server down,
slow, refused) returns None (or False), counts the error in `errors`, reports it once per outage
through `on_error`, and tries again by itself later; the caller decides what None means
(`state.on_error: local | refuse`). Keys are namespaced by `state.key_prefix`; values that come
from the network (IP, nonce) only ever appear inside keys, never as metric labels.

Never does: SIP decisions (the core makes them, given the answers as values), logging or metrics
of its own (the shell passes callbacks), any call on a path that does not need shared state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sipguard.settings import StateSettings

__all__ = ["Answer", "BanCallback", "ErrorCallback", "SharedState", "open_state"]

# A ban heard from any instance: (source IP, end of the ban in epoch seconds).
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

    async def add(self, key: str, amount: int, ttl: float) -> int | None:
        """Add `amount` (may be negative) to the counter `key` (below the key prefix) and keep
        it `ttl` seconds after its last change; the new value, or None."""
        ...


def open_state(settings: StateSettings) -> SharedState:
    """The backend the config names; redis-py is imported only when it is used."""
    if settings.backend == "redis":
        from sipguard.state.redis_store import RedisState

        return RedisState(settings)
    from sipguard.state.memory import MemoryState

    return MemoryState(settings)
