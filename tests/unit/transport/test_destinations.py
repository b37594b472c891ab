"""The send path's check of a destination host (SECURITY-CASES 16): which family to send with,
or 0 for what sipguard never sends to, whatever the core asked."""

from __future__ import annotations

import socket

import pytest

from sipguard import transport
from sipguard.transport import destination_family


@pytest.mark.parametrize(
    ("host", "family"),
    [
        ("192.0.2.1", socket.AF_INET),
        ("2001:db8::1", socket.AF_INET6),
        ("::ffff:192.0.2.1", socket.AF_INET6),  # a dual-stack socket's IPv4 peer
        ("224.0.0.1", 0),  # multicast
        ("ff02::1", 0),
        ("::ffff:239.1.2.3", 0),  # multicast behind the IPv4-mapped form
        ("255.255.255.255", 0),  # limited broadcast
        ("::ffff:255.255.255.255", 0),
        ("0.0.0.0", 0),  # unspecified
        ("::", 0),
        ("sip.example.com", 0),  # no DNS at runtime: not an IP literal
        ("", 0),
    ],
)
def test_destination_family(host: str, family: int) -> None:
    assert destination_family(host) == family
    assert destination_family(host) == family  # the cached answer is the same


def test_destination_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "_DESTINATIONS_SIZE", 16)
    monkeypatch.setattr(transport, "_DESTINATIONS", {})
    for n in range(100):
        assert destination_family(f"198.51.100.{n}") == socket.AF_INET
        assert len(transport._DESTINATIONS) <= 16
