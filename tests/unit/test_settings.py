"""The frozen settings types: defaults, URL spelling, and secrets kept out of reprs."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from sipguard.settings import (
    AuthSettings,
    Credential,
    Limits,
    Listener,
    Protection,
    Settings,
    Trunk,
    Upstream,
)


def test_listener_url_brackets_ipv6() -> None:
    assert Listener("udp", "::1", 5060).url == "udp://[::1]:5060"
    assert Listener("tls", "127.0.0.1", 5061).url == "tls://127.0.0.1:5061"


@pytest.mark.parametrize(("transport", "port"), [("sctp", 5060), ("udp", 0), ("tcp", 65536)])
def test_listener_rejects_bad_values(transport: str, port: int) -> None:
    with pytest.raises(ValueError, match="listener"):
        Listener(transport, "127.0.0.1", port)


def test_upstream_hostport() -> None:
    assert Upstream("sip:[::1]:5070", "udp", "::1", 5070).hostport == "[::1]:5070"


def test_secrets_never_in_repr() -> None:
    cred = Credential("alice", password="s3cret-pw")
    cred_ha1 = Credential("bob", ha1={"MD5": "0" * 32})
    auth = AuthSettings("sipguard.test", secret=b"k3y-material-0123456")
    trunk = Trunk("demo", ("127.0.0.1",), (cred, cred_ha1))
    settings = Settings("x.yaml", (), None, (), auth, (trunk,))
    text = repr(settings)
    assert "s3cret-pw" not in text
    assert "0" * 32 not in text
    assert "k3y-material" not in text
    assert "alice" in text


def test_settings_are_frozen_and_hashable() -> None:
    trunk = Trunk("demo", (), (Credential("bob", ha1={"MD5": "a" * 32}),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        trunk.name = "other"  # type: ignore[misc]
    assert hash(trunk) == hash(Trunk("demo", (), (Credential("bob", ha1={"MD5": "a" * 32}),)))


def test_credential_needs_exactly_one_secret() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Credential("x")
    with pytest.raises(ValueError, match="exactly one"):
        Credential("x", password="p", ha1={"MD5": "a" * 32})
    with pytest.raises(ValueError, match="timezone"):
        Credential("x", password="p", valid_until=datetime(2030, 1, 1))


def test_auth_rejects_unknown_algorithm_and_refuse() -> None:
    with pytest.raises(ValueError, match="algorithms"):
        AuthSettings("r", algorithms=("MD5-sess",))
    with pytest.raises(ValueError, match="refuse"):
        AuthSettings("r", refuse="404")


def test_defaults() -> None:
    assert Limits().max_message_bytes == 65535
    assert Protection().burst >= 400
    assert "friendly-scanner" in Protection().scanner_user_agents
