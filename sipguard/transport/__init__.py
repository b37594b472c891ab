"""The transport shell: sockets, TLS, timers and the execution of the core's actions.

Owns: what the transports need from the sans-IO core (`CoreProtocol`) and its stream framer
(`Framer`), where they hand what they receive (`MessageSink`), what they report to
observability (`ObserverProtocol`, with the do-nothing `NullObserver`), and the cheap checks every
send path shares (`destination_family`, `family_of`).

Never does: SIP decisions. Which message goes where, with which bytes, is the core's answer; the
transports only frame streams (RFC 3261 §18.3, through the codec's framer), answer RFC 5626 §4.4.1
CRLF keep-alives, enforce resource limits and deliver what the core returns. Never logs per
packet: observability is the observer's business, called once per decision.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any, Protocol

from sipguard.errors import ParseError
from sipguard.proxy.actions import Action, Address, Forward
from sipguard.sip.framing import KeepAlive
from sipguard.sip.limits import ParserLimits

__all__ = [
    "CoreProtocol",
    "Framer",
    "MessageSink",
    "NullObserver",
    "ObserverProtocol",
    "destination_family",
    "family_of",
]


class CoreProtocol(Protocol):
    """The part of `sipguard.proxy.core.Core` the shell calls (bytes + peer + now in, actions out).

    `now` is `time.time()`. `connection` is the shell's id of the stream connection the bytes came
    on (None for UDP). `local` is the listener's address (for an outbound connection: its local
    side)."""

    def handle(
        self,
        data: bytes,
        source: Address,
        local: Address,
        connection: int | None,
        now: float,
    ) -> list[Action]: ...

    def framing_error(
        self, error: ParseError, source: Address, local: Address, connection: int, now: float
    ) -> list[Action]: ...

    def upstream_failed(self, forward: Forward, now: float) -> list[Action]: ...

    def tick(self, now: float) -> Sequence[object]: ...

    def reconfigure(self, settings: Any) -> None: ...

    def use_upstream_sockets(self, sockets: Sequence[Address]) -> None: ...

    @property
    def parser_limits(self) -> ParserLimits: ...


class Framer(Protocol):
    """The codec's stream framer (`sipguard.sip.framing.StreamFramer`)."""

    def feed(self, data: bytes) -> Sequence[bytes | KeepAlive]: ...

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message."""
        ...


class MessageSink(Protocol):
    """Where transports hand what they receive (implemented by `dispatch.Dispatcher`)."""

    def receive(
        self, data: bytes, source: Address, local: Address, connection: int | None
    ) -> None: ...

    def framing_failed(
        self, error: ParseError, source: Address, local: Address, connection: int
    ) -> None: ...

    def undeliverable(self, forward: Forward, detail: str) -> None: ...


class ObserverProtocol(Protocol):
    """What the shell reports. Implemented by `sipguard.observer` (logs, metrics, systemd)."""

    def started(self, listeners: Sequence[str]) -> None: ...

    def decision(self, action: Action, source: Address, elapsed: float) -> None: ...

    def connection_opened(self, transport: str) -> None: ...

    def connection_closed(self, transport: str) -> None: ...

    def upstream_error(self, to: Address, detail: str) -> None: ...

    def bug(self, exc: BaseException, source: Address) -> None: ...

    def reloading(self) -> None: ...

    def config_reloaded(self, settings: Any) -> None: ...

    def config_reload_failed(self, problems: list[str]) -> None: ...

    def banned(self, event: Any) -> None: ...

    def upstream_report(self, report: Any) -> None: ...

    def stopping(self) -> None: ...

    def listener_error(self, listener: str, detail: str) -> None: ...

    def peer_unreachable(self, peer: Address, reason: str) -> None: ...

    def state_outage(self, operation: str, detail: str) -> None: ...

    def state_errors(self, count: int) -> None: ...


class NullObserver:
    """An observer that observes nothing: the default, and the base of test observers."""

    def started(self, listeners: Sequence[str]) -> None:
        pass

    def decision(self, action: Action, source: Address, elapsed: float) -> None:
        pass

    def connection_opened(self, transport: str) -> None:
        pass

    def connection_closed(self, transport: str) -> None:
        pass

    def upstream_error(self, to: Address, detail: str) -> None:
        pass

    def bug(self, exc: BaseException, source: Address) -> None:
        pass

    def reloading(self) -> None:
        pass

    def config_reloaded(self, settings: Any) -> None:
        pass

    def config_reload_failed(self, problems: list[str]) -> None:
        pass

    def banned(self, event: Any) -> None:
        pass

    def upstream_report(self, report: Any) -> None:
        pass

    def state_outage(self, operation: str, detail: str) -> None:
        pass

    def state_errors(self, count: int) -> None:
        pass

    def stopping(self) -> None:
        pass

    def listener_error(self, listener: str, detail: str) -> None:
        pass

    def peer_unreachable(self, peer: Address, reason: str) -> None:
        pass


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal, else AF_INET (hosts are IP literals: no DNS at runtime)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


_LIMITED_BROADCAST = b"\xff\xff\xff\xff"  # 255.255.255.255, RFC 919
# host -> its family, or 0 when we may not send to it; cleared when full (hosts come from peers)
_DESTINATIONS: dict[str, int] = {}
_DESTINATIONS_SIZE = 4096


def destination_family(host: str) -> int:
    """The address family to send to `host` with (`family_of`), or 0 when `host` is no IP
    literal we may send to: multicast, the limited broadcast, unspecified (SECURITY-CASES 16).
    The core never asks for those; this is the shell's cheap second check, and both answers
    cost one dict lookup per datagram (resolved once per host)."""
    family = _DESTINATIONS.get(host)
    if family is not None:
        return family
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        family = 0
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        refused = ip.is_multicast or ip.is_unspecified or ip.packed == _LIMITED_BROADCAST
        family = 0 if refused else family_of(host)
    if len(_DESTINATIONS) >= _DESTINATIONS_SIZE:
        _DESTINATIONS.clear()
    _DESTINATIONS[host] = family
    return family
