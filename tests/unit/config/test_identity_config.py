"""The `identity` section, `trunks[].attributes` and credential rotation keys (issue 16)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipguard.config import load_settings_with_warnings
from sipguard.errors import ConfigError
from sipguard.settings import DEFAULT_STRIP_INBOUND, Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BASE = """\
listen: [udp://127.0.0.1:5060]
upstream: [sip:127.0.0.1:5070]
auth: {realm: sipguard.test}
trunks:
  - name: demo
    whitelist: [127.0.0.1]
"""
K2 = "k2-secret-0123456789abcdef"
ENVIRON = {"K1": "k1-secret-from-the-environment", "SHORT": "short"}


def load(tmp_path: Path, text: str) -> tuple[Settings, list[str]]:
    (tmp_path / "k2.key").write_text(K2 + "\n")
    (tmp_path / "short.key").write_text("short\n")
    path = tmp_path / "sipguard.yaml"
    path.write_text(text)
    return load_settings_with_warnings(str(path), environ=ENVIRON, now=NOW)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    prefix = f"{tmp_path / 'sipguard.yaml'}: "
    assert all(p.startswith(prefix) for p in exc.value.problems)
    return [p.removeprefix(prefix) for p in exc.value.problems]


def identity(body: str) -> str:
    return BASE + "identity:\n" + textwrap.indent(textwrap.dedent(body), "  ")


def attributes(body: str) -> str:
    return BASE + "    attributes:\n" + textwrap.indent(textwrap.dedent(body), "      ")


def test_identity_section_as_in_the_issue(tmp_path: Path) -> None:
    settings, _ = load(
        tmp_path,
        identity("""\
            header_prefix: X-Tenant-
            signing_keys:
              - {id: k2, secret_file: k2.key}
              - {id: k1, secret_env: K1}
            max_age: 45
            strip_inbound: [P-Asserted-Identity, X-Forwarded-For]
        """),
    )
    ident = settings.identity
    assert ident is not None
    assert ident.header_prefix == "X-Tenant-"
    assert [(k.id, k.secret) for k in ident.signing_keys] == [
        ("k2", K2.encode()),
        ("k1", ENVIRON["K1"].encode()),
    ]
    assert ident.signing_keys[0].source == f"file:{tmp_path / 'k2.key'}"
    assert ident.signing_keys[1].source == "env:K1"
    assert ident.max_age == 45
    assert ident.strip_inbound == ("P-Asserted-Identity", "X-Forwarded-For")
    assert K2 not in repr(settings)


def test_identity_defaults_and_absence(tmp_path: Path) -> None:
    settings, _ = load(tmp_path, identity("signing_keys: [{id: k2, secret_file: k2.key}]\n"))
    assert settings.identity is not None
    assert settings.identity.header_prefix == "X-Sipguard-"
    assert settings.identity.max_age == 30
    assert settings.identity.strip_inbound == DEFAULT_STRIP_INBOUND
    assert load(tmp_path, BASE)[0].identity is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "max_age: 30\n",
            [
                "identity.signing_keys: missing: give at least one key (id and "
                "secret_file or secret_env)"
            ],
        ),
        (
            "signing_keys: []\n",
            [
                "identity.signing_keys: empty: give at least one key (id and secret_file or "
                "secret_env)"
            ],
        ),
        (
            "signing_keys: [{id: k2, secret_file: k2.key}, {id: k2, secret_env: K1}]\n",
            [
                "identity.signing_keys[1].id: 'k2': duplicate key id "
                "(see identity.signing_keys[0].id)"
            ],
        ),
        (
            "signing_keys: [{id: 'k 2', secret_file: k2.key}]\n",
            [
                "identity.signing_keys[0].id: 'k 2': must be 1 to 32 letters, digits, '.', '-' "
                "or '_'"
            ],
        ),
        (
            "signing_keys: [{id: k2, secret_file: k2.key, secret_env: K1}]\n",
            ["identity.signing_keys[0]: give exactly one of secret_file and secret_env"],
        ),
        (
            "signing_keys: [{id: k2}]\n",
            ["identity.signing_keys[0]: give exactly one of secret_file and secret_env"],
        ),
        ("signing_keys: [{secret_file: k2.key}]\n", ["identity.signing_keys[0].id: missing"]),
        (
            "signing_keys: [{id: k2, secret_file: short.key}]\n",
            ["identity.signing_keys[0].secret_file: the secret is shorter than 16 bytes"],
        ),
        (
            "signing_keys: [{id: k2, secret_env: SHORT}]\n",
            ["identity.signing_keys[0].secret_env: the secret is shorter than 16 bytes"],
        ),
        (
            "signing_keys: [{id: k2, secret_env: NOPE}]\n",
            ["identity.signing_keys[0].secret_env: environment variable NOPE is not set or empty"],
        ),
        (
            "signing_keys: [{id: k2, secret_file: k2.key, colour: red}]\n",
            ["identity.signing_keys[0].colour: unknown key (known: id, secret_file, secret_env)"],
        ),
        (
            "header_prefix: 'X Tenant:'\nsigning_keys: [{id: k2, secret_file: k2.key}]\n",
            [
                "identity.header_prefix: 'X Tenant:': must be 1 to 32 header name characters "
                "(letters, digits, '-'...)"
            ],
        ),
        (
            "max_age: 0\nsigning_keys: [{id: k2, secret_file: k2.key}]\n",
            ["identity.max_age: 0 is out of range 1..86400"],
        ),
        (
            "strip_inbound: P-Asserted-Identity\nsigning_keys: [{id: k2, secret_file: k2.key}]\n",
            ["identity.strip_inbound: expected a list of header names, got a string"],
        ),
        (
            "strip_inbound: ['X-A: b']\nsigning_keys: [{id: k2, secret_file: k2.key}]\n",
            ["identity.strip_inbound[0]: 'X-A: b': not a header name (1-64 token characters)"],
        ),
    ],
)
def test_identity_errors_name_the_key(tmp_path: Path, body: str, expected: list[str]) -> None:
    assert problems(tmp_path, identity(body)) == expected


def test_attributes(tmp_path: Path) -> None:
    settings, _ = load(tmp_path, attributes('org_id: "8d1c5e0a"\nplan: gold\n'))
    assert settings.trunks[0].attributes == (("org_id", "8d1c5e0a"), ("plan", "gold"))
    assert load(tmp_path, BASE)[0].trunks[0].attributes == ()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'org_id: "8d1c\\r\\nX-Sipguard-Trunk: other"\n',
            "trunks[0].attributes.org_id: value holds a control or non-printable character "
            "(a header line cannot carry it)",
        ),
        (
            'org_id: "a\\nb"\n',
            "trunks[0].attributes.org_id: value holds a control or non-printable character "
            "(a header line cannot carry it)",
        ),
        (
            "seats: 10\n",
            "trunks[0].attributes.seats: expected a string, got an integer (YAML reads "
            "unquoted 1:20 as 80 and 010 as 8); quote the value",
        ),
        (
            "'org id': x\n",
            "trunks[0].attributes.org id: attribute name must start with a letter "
            "or digit and hold only letters, digits, '-' and '_'",
        ),
        ("org_id: ' x'\n", "trunks[0].attributes.org_id: value has leading or trailing whitespace"),
        ("org_id: ''\n", "trunks[0].attributes.org_id: value must not be empty"),
        (f"org_id: {'x' * 257}\n", "trunks[0].attributes.org_id: value longer than 256 bytes"),
        (
            "org_id: a\nOrg-Id: b\n",
            "trunks[0].attributes.Org-Id: same header as "
            "trunks[0].attributes.org_id ('-' and '_' and case do not "
            "count)",
        ),
        ("1: a\n", "trunks[0].attributes: attribute name 1 is not a string; quote it"),
    ],
)
def test_attribute_errors_name_the_key(tmp_path: Path, body: str, expected: str) -> None:
    assert problems(tmp_path, attributes(body)) == [expected]


def test_attributes_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, BASE + "    attributes: [a, b]\n") == [
        "trunks[0].attributes: expected a mapping of names to values, got a list"
    ]


ROTATION = (
    BASE
    + """\
    credentials:
      - {username: alice, password: old, valid_until: "2026-07-01T00:00:00Z"}
      - {username: alice, password: new, not_before: "2026-05-01T00:00:00Z"}
"""
)


def test_rotation_one_username_several_secrets(tmp_path: Path) -> None:
    settings, warnings = load(tmp_path, ROTATION)
    old, new = settings.trunks[0].credentials
    assert (old.username, old.password, new.username, new.password) == (
        "alice",
        "old",
        "alice",
        "new",
    )
    assert old.valid_until == datetime(2026, 7, 1, tzinfo=UTC)
    assert new.not_before == datetime(2026, 5, 1, tzinfo=UTC)
    assert not any("every secret" in w for w in warnings)


def test_usernames_stay_unique_across_trunks(tmp_path: Path) -> None:
    text = (
        ROTATION
        + """\
  - name: other
    whitelist: [127.0.0.2]
    credentials: [{username: alice, password: x}]
"""
    )
    assert problems(tmp_path, text) == [
        "trunks[1].credentials[0].username: 'alice': duplicate; usernames are unique across "
        "trunks (see trunks[0].credentials[0].username)"
    ]


def test_not_before_must_precede_valid_until(tmp_path: Path) -> None:
    text = (
        BASE
        + """\
    credentials:
      - {username: a, password: p, not_before: "2027-01-01T00:00:00Z",
         valid_until: "2027-01-01T00:00:00Z"}
"""
    )
    assert problems(tmp_path, text) == [
        "trunks[0].credentials[0].not_before: must be before valid_until: this secret never works"
    ]
    bad = BASE + "    credentials: [{username: a, password: p, not_before: 2027-01-01}]\n"
    assert problems(tmp_path, bad) == [
        "trunks[0].credentials[0].not_before: give a time and a timezone, e.g. 2027-01-01T00:00:00Z"
    ]


def test_warns_when_every_secret_of_a_username_has_expired(tmp_path: Path) -> None:
    text = (
        BASE
        + """\
    credentials:
      - {username: alice, password: old, valid_until: "2026-01-01T00:00:00Z"}
      - {username: alice, password: older, valid_until: "2026-02-01T00:00:00Z"}
      - {username: bob, password: old, valid_until: "2026-01-01T00:00:00Z"}
      - {username: bob, password: new}
"""
    )
    _, warnings = load(tmp_path, text)
    path = tmp_path / "sipguard.yaml"
    every = [w for w in warnings if "every secret" in w]
    assert every == [
        f"{path}: trunks[0].credentials: every secret of 'alice' has expired: 'alice' cannot "
        "sign in"
    ]
