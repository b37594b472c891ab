"""The frozen settings types: defaults, URL spelling, and secrets kept out of reprs."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from sipguard.policy.whitelist import parse_rules
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
from sipguard.settings.diff import DIFFED_SECTIONS, SettingsDiff, diff_settings


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
    trunk = Trunk("demo", parse_rules(("127.0.0.1",)), (cred, cred_ha1))
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


def base_settings(**changes: object) -> Settings:
    settings = Settings(
        source="sipguard.yaml",
        listen=(Listener("udp", "127.0.0.1", 5060), Listener("tcp", "127.0.0.1", 5060)),
        tls=None,
        upstream=(Upstream("sip:127.0.0.1:5070", "udp", "127.0.0.1", 5070),),
        auth=AuthSettings("sipguard.test"),
        trunks=(
            Trunk("carrier", whitelist=parse_rules(("192.0.2.0/24", "198.51.100.7"))),
            Trunk("office", credentials=(Credential("alice", password="pw-a"),)),
        ),
    )
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def test_diff_of_identical_settings_is_empty() -> None:
    diff = diff_settings(base_settings(), base_settings())
    assert not diff.changed
    assert diff == SettingsDiff(rules=(2, 2), credentials=(1, 1), listeners=(2, 2))


def test_diff_names_a_whitelist_edit() -> None:
    old = base_settings()
    carrier = Trunk(
        "carrier", whitelist=parse_rules(("192.0.2.0/24", "198.51.100.7", "203.0.113.9"))
    )
    new = base_settings(trunks=(carrier, old.trunks[1]))
    diff = diff_settings(old, new)
    assert diff.changed
    assert diff.trunks_changed == ("carrier",)
    assert diff.trunks_added == diff.trunks_removed == ()
    assert diff.rules == (2, 3)
    assert diff.sections_changed == ()


def test_diff_names_trunks_listeners_and_sections() -> None:
    old = base_settings()
    new = base_settings(
        listen=(Listener("udp", "127.0.0.1", 5060), Listener("udp", "::1", 5060)),
        trunks=(
            old.trunks[1],
            Trunk("monitor", whitelist=parse_rules(("127.0.0.1",))),
            Trunk("backup", credentials=(Credential("bob", password="pw-b"),)),
        ),
        limits=Limits(shutdown_grace=20.0),
        protection=Protection(rate=500.0),
    )
    diff = diff_settings(old, new)
    assert diff.trunks_added == ("monitor", "backup")
    assert diff.trunks_removed == ("carrier",)
    assert diff.trunks_changed == ()
    assert diff.listeners_added == ("udp://[::1]:5060",)
    assert diff.listeners_removed == ("tcp://127.0.0.1:5060",)
    assert diff.sections_changed == ("limits", "protection")
    assert (diff.rules, diff.credentials, diff.listeners) == ((2, 1), (1, 2), (2, 2))


def test_diff_sees_a_changed_password_without_showing_it() -> None:
    old = base_settings()
    office = Trunk("office", credentials=(Credential("alice", password="pw-new"),))
    diff = diff_settings(old, base_settings(trunks=(old.trunks[0], office)))
    assert diff.trunks_changed == ("office",)
    assert "pw-" not in repr(diff)


def test_diff_compares_every_settings_field() -> None:
    """A new `Settings` field is compared by `diff_settings` (or itemised) from the start."""
    fields = {field.name for field in dataclasses.fields(Settings)}
    itemised = {"source", "source_sha256", "listen", "trunks"}  # the file; listed items
    assert set(DIFFED_SECTIONS) | itemised == fields
    assert not set(DIFFED_SECTIONS) & itemised
