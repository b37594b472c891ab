"""The running daemon: listeners, signals, reload, graceful shutdown, the core's heartbeat.

Owns, by room (each imports only the rooms below it):
- `run`: `run_from_file`, what `sipguard run --config FILE` does, with its exit codes;
- `signals`: what SIGTERM, SIGINT and SIGHUP mean in each phase;
- `lifecycle`: `Server` (wires its listeners to the core through the dispatcher, ticks the
  core, reloads, drains and stops);
- `listeners`: the sockets (`Listeners`: bound at start, staged and committed or undone on a
  reload, closed at stop; `ListenerError`, `Bound`, `bind_stream`, `upstream_socket_hosts`);
- `tls`, `tuning`: what the settings mean to the transports (TLS contexts; stream bounds,
  reserved sources, the tick interval);
- `notes`: lifecycle lines outside the observer's vocabulary (`note`, `StderrObserver`,
  `describe_error`).
The observer interface (`ObserverProtocol`, `NullObserver`) is defined in `sipguard.transport`
so that transports can report too, and re-exported here.

Never does: SIP decisions (the core's), per-packet logging (the observer logs decisions).
"""

from __future__ import annotations

from sipguard.server.lifecycle import Server
from sipguard.server.listeners import ListenerError
from sipguard.server.notes import StderrObserver, describe_error
from sipguard.server.run import run_from_file
from sipguard.server.tuning import reserved_sources, stream_limits, tick_interval
from sipguard.transport import NullObserver, ObserverProtocol

__all__ = [
    "ListenerError",
    "NullObserver",
    "ObserverProtocol",
    "Server",
    "StderrObserver",
    "describe_error",
    "reserved_sources",
    "run_from_file",
    "stream_limits",
    "tick_interval",
]
