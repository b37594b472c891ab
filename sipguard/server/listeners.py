"""The sockets sipguard serves on: opening a configured listener, and finding where our own
upstream-facing UDP sockets bind.

Owns: `ListenerError` (a listener that cannot be opened, by its URL), `Bound` (one open
listener), `bind_stream` (a listening TCP socket with its options), `upstream_socket_hosts`,
`LISTEN_BACKLOG`.

Never does: read or write SIP, decide which listeners the config wants (`Server` does, at start
and reload).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from sipguard.proxy.actions import Address
from sipguard.settings import Listener, Settings
from sipguard.transport import family_of
from sipguard.transport.udp import UdpEndpoint, source_address_toward

LISTEN_BACKLOG = 1024  # pending TCP accepts per listener: absorbs a reconnect storm


class ListenerError(Exception):
    """A listener could not be opened. `listener` is its URL (`tcp://127.0.0.1:5060`)."""

    def __init__(self, listener: str, detail: str) -> None:
        self.listener = listener
        self.detail = detail
        super().__init__(f"{listener}: {detail}")


@dataclass(slots=True)
class Bound:
    """One open listener."""

    listener: Listener
    address: Address  # with the port actually bound
    udp: UdpEndpoint | None = None
    server: asyncio.Server | None = None

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.server is not None:
            self.server.close()


def upstream_socket_hosts(settings: Settings) -> list[str]:
    """Where sipguard's own upstream-facing UDP sockets bind: for each address family with a UDP
    upstream, the local address the routing table picks toward the first of them (the address
    our Via then names). Raises ListenerError when an upstream has no route."""
    hosts: dict[int, str] = {}
    for upstream in settings.upstream:
        family = family_of(upstream.host)
        if upstream.transport != "udp" or family in hosts:
            continue
        try:
            hosts[family] = source_address_toward(upstream.host, upstream.port)
        except OSError as exc:
            raise ListenerError(f"upstream {upstream.uri}", exc.strerror or str(exc)) from exc
    return list(hosts.values())


def bind_stream(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket: SO_REUSEADDR (restart while old connections sit in TIME_WAIT),
    IPv6 only on an IPv6 address (an IPv4 listener is configured separately), SO_REUSEPORT
    for the workers of one host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
