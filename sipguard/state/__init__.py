"""State shared by every worker and every host: one interface, two backends (DESIGN §7).

Owns: `SharedState`, the only way the shell reads or writes state that other sipguard processes
must see (defined with its callbacks in `state/interface.py`, which the backends import, so
that none imports this package back), and `open_state`, which builds the backend the config
names (`state.backend`):
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
- unbans: `publish_unban` deletes the stored ban (and the failure window) and publishes the lift;
  every instance hears it through the same callback, with an end of 0, and lifts its local copy;
- calls in progress per trunk: `share_calls` stores this instance's counts (with a short TTL, so
  a dead instance's calls vanish by themselves) and answers the sum of the others' (the shell
  does this once a second and hands the sums to the core);
- counters for other features (`add` with a TTL).

Contract of every call: it never raises for an outage. A backend that cannot answer (server down,
slow, refused) returns None (or False), counts the error in `errors`, reports it once per outage
through `on_error`, and tries again by itself later; the caller decides what None means
(`state.on_error: local | refuse`). Keys are namespaced by `state.key_prefix`; values that come
from the network (IP, nonce) only ever appear inside keys, never as metric labels.

Never does: SIP decisions (the core makes them, given the answers as values), logging or metrics
of its own (the shell passes callbacks), any call on a path that does not need shared state.
"""

from __future__ import annotations

from sipguard.settings import StateSettings
from sipguard.state.interface import Answer, BanCallback, ErrorCallback, SharedState

__all__ = ["Answer", "BanCallback", "ErrorCallback", "SharedState", "open_state"]


def open_state(settings: StateSettings) -> SharedState:
    """The backend the config names; redis-py is imported only when it is used."""
    if settings.backend == "redis":
        from sipguard.state.redis_store import RedisState

        return RedisState(settings)
    from sipguard.state.memory import MemoryState

    return MemoryState(settings)
