"""The bounds stream connections live under, as the transport applies them.

Owns: `StreamLimits` (the operator's bounds from `settings.limits` and `settings.tls`, and the
reserve of inbound connections kept for whitelisted sources, SECURITY-CASES 5, 6, 9),
`QUEUED_MESSAGES`, and `ReservedSource`, the predicate that names those sources. One
connection applies them (`transport.stream`), the table of connections too (`transport.streams`).

Never does: hold or count connections, I/O, logging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sipguard.settings import Limits

__all__ = ["QUEUED_MESSAGES", "ReservedSource", "StreamLimits"]

_SETTINGS = Limits()  # the defaults of the operator's bounds, with their reasons
# Bytes queued toward a peer, in largest messages: a live peer drains 16 within a round trip.
QUEUED_MESSAGES = 16


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The bounds a stream connection lives under (from `settings.limits` and `settings.tls`;
    the defaults are `settings.Limits`'s, where their reasons are written)."""

    read_deadline: float = _SETTINGS.read_deadline  # from a message's first byte to its last
    idle_timeout: float = _SETTINGS.idle_timeout  # seconds without traffic either way
    # seconds for a TLS handshake (inbound and outbound)
    handshake_timeout: float = _SETTINGS.tls_handshake_timeout
    max_connections: int = _SETTINGS.max_connections  # inbound connections in total
    # inbound connections from one IP address
    max_connections_per_source: int = _SETTINGS.max_connections_per_source
    # Bytes queued toward a peer that does not read (kernel buffer full) before we cut it off.
    max_write_buffer: int = QUEUED_MESSAGES * _SETTINGS.max_message_bytes
    # Bytes queued on an outbound connection that is still connecting: a burst of requests
    # toward an upstream that is being (re)connected.
    max_pending_bytes: int = QUEUED_MESSAGES * _SETTINGS.max_message_bytes
    # After we decide to close, how long a peer has to read our last bytes (e.g. a 400).
    linger: float = 2.0

    @property
    def reserved_connections(self) -> int:
        """Inbound connections that only reserved sources (named by a trunk's whitelist or an
        upstream) may take: 10% of `max_connections`, and at least one source's full share
        (`max_connections_per_source`) as long as that is at most half of the total. Every
        other source shares `max_connections - reserved_connections` (SECURITY-CASES 9)."""
        total = self.max_connections
        tenth = -(-total // 10)  # rounded up: any total above 0 keeps a slot
        return max(tenth, min(self.max_connections_per_source, total // 2))


ReservedSource = Callable[[str], bool]
