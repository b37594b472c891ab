"""The admission sections: `auth` (realm, algorithms, nonces) and `trunks` with their
whitelists and credentials (DESIGN §3, §5).

Owns: the trunk names (unique; they are metric label values), whitelist rules (parsed once
with `policy.whitelist.parse_rule` into `settings.Rule`), credentials (usernames unique across
trunks; within its trunk a username may be listed once per secret, for rotation, each with an
optional `not_before` and `valid_until`), and the warnings about open, useless or expiring parts
(a username whose every secret has expired).

Never does: read a secret itself (`sipguard.config.secrets` does), match a source, compute a
digest.

Extension point: a new optional trunk sub-key is one entry in `TRUNK_KEYS`: its reader gets the
value and its key path and returns the value of the `Trunk` field of the same name (None when
it reported a problem). The core keys (name, whitelist, credentials, algorithms, allow_open)
depend on each other and are read by `read_trunk` itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from sipguard.config.identity import read_attributes
from sipguard.config.reader import Reader, describe
from sipguard.config.secrets import credential_secret, nonce_key
from sipguard.config.tenants import read_trunk_limits
from sipguard.policy.whitelist import parse_rule
from sipguard.settings import (
    ALGORITHMS,
    REFUSE_ACTIONS,
    AuthSettings,
    Credential,
    Rule,
    Trunk,
)

AUTH_KEYS = ("realm", "algorithms", "nonce_ttl", "secret_file", "secret_env", "refuse")
CORE_TRUNK_KEYS = ("name", "whitelist", "credentials", "algorithms", "allow_open")
CREDENTIAL_KEYS = (
    "username",
    "password",
    "ha1",
    "password_env",
    "password_file",
    "valid_until",
    "not_before",
)
EXPIRY_WARNING = timedelta(days=14)
_TRUNK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # it is a metric label value

TrunkKeyReader = Callable[[Reader, object, str], Any]
# Optional trunk sub-keys beyond the core ones: key -> reader (see the module docstring).
TRUNK_KEYS: dict[str, TrunkKeyReader] = {
    "limits": read_trunk_limits,
    "attributes": read_attributes,
}


def read_auth(r: Reader, value: object, done: Mapping[str, Any]) -> AuthSettings | None:
    """`auth`: the realm and how challenges are made; the nonce key."""
    if value is None:
        r.error("auth", "missing: give at least auth.realm")
        return None
    section = r.mapping(value, "auth", AUTH_KEYS)
    if section is None:
        return None
    realm = None
    if "realm" not in section:
        r.error("auth.realm", "missing")
    else:
        realm = r.quotable(section["realm"], "auth.realm")
    algorithms: tuple[str, ...] | None = ("MD5",)
    if "algorithms" in section:
        algorithms = r.algorithms(section["algorithms"], "auth.algorithms")
    nonce_ttl = r.integer(section.get("nonce_ttl", 300), "auth.nonce_ttl", 1, 86400)
    refuse = r.choice(section.get("refuse", "403"), "auth.refuse", REFUSE_ACTIONS)
    secret, source = nonce_key(r, section)
    if realm is None or algorithms is None or nonce_ttl is None or refuse is None:
        return None
    if source is None:
        return None
    return AuthSettings(realm, algorithms, nonce_ttl, secret, source, refuse)


class _Seen:
    """Names met so far across trunks: trunk names and usernames, each with its key path."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.usernames: dict[str, str] = {}


def read_trunks(r: Reader, value: object, done: Mapping[str, Any]) -> tuple[Trunk, ...] | None:
    """`trunks`: the list of trunks, in order (the first whose whitelist matches is tried first)."""
    if value is None:
        r.error("trunks", "missing: give at least one trunk")
        return None
    if not isinstance(value, list):
        r.error("trunks", f"expected a list, got {describe(value)}")
        return None
    if not value:
        r.warn("trunks", "no trunks: every request will be refused")
    auth: AuthSettings | None = done.get("auth")
    found: list[Trunk] = []
    seen = _Seen()
    for index, item in enumerate(value):
        trunk = read_trunk(r, item, f"trunks[{index}]", auth, seen)
        if trunk is not None:
            found.append(trunk)
    return tuple(found)


def read_trunk(
    r: Reader, value: object, key: str, auth: AuthSettings | None, seen: _Seen
) -> Trunk | None:
    section = r.mapping(value, key, CORE_TRUNK_KEYS + tuple(TRUNK_KEYS))
    if section is None:
        return None
    before = len(r.problems)
    name = trunk_name(r, section, key, seen)
    rules: list[Rule] = []
    if section.get("whitelist") is not None:
        items = r.parsed_list(section["whitelist"], f"{key}.whitelist", parse_rule)
        rules = [rule for _, rule in items or []]
    algorithms = None
    if section.get("algorithms") is not None:
        algorithms = r.algorithms(section["algorithms"], f"{key}.algorithms")
    challenged = algorithms or (auth.algorithms if auth else ALGORITHMS)
    credentials = trunk_credentials(r, section, key, challenged, seen)
    allow_open = r.boolean(section.get("allow_open", False), f"{key}.allow_open")
    if allow_open is None:
        return None
    extras = {
        sub: read(r, section[sub], f"{key}.{sub}")
        for sub, read in TRUNK_KEYS.items()
        if section.get(sub) is not None
    }
    if not open_trunk_ok(r, section, key, allow_open):
        return None
    if algorithms is not None and not credentials:
        r.warn(f"{key}.algorithms", "has no effect on a trunk without credentials")
    if len(r.problems) != before or name is None:
        return None
    return Trunk(name, tuple(rules), tuple(credentials), algorithms, allow_open, **extras)


def trunk_name(r: Reader, section: dict[str, Any], key: str, seen: _Seen) -> str | None:
    if "name" not in section:
        r.error(f"{key}.name", "missing")
        return None
    name = r.string(section["name"], f"{key}.name")
    if name is None:
        return None
    if not _TRUNK_NAME.match(name):
        r.error(
            f"{key}.name",
            f"{name!r}: use 1-64 letters, digits, '_', '.' or '-' (it is a metric label)",
        )
        return None
    if name in seen.names:
        r.error(f"{key}.name", f"{name!r}: duplicate trunk name (see {seen.names[name]})")
        return None
    seen.names[name] = f"{key}.name"
    return name


def open_trunk_ok(r: Reader, section: dict[str, Any], key: str, allow_open: bool) -> bool:
    """A trunk with neither whitelist nor credentials admits anyone: only when allowed."""
    if not section.get("whitelist") and not section.get("credentials"):
        if not allow_open:
            r.error(
                key,
                "neither a whitelist nor credentials: this trunk would admit anyone "
                "(an open relay); set allow_open: true if that is really meant",
            )
            return False
        r.warn(key, "open trunk: admits every source without authentication")
    elif allow_open:
        r.warn(f"{key}.allow_open", "has no effect on a trunk with a whitelist or credentials")
    return True


def trunk_credentials(
    r: Reader, section: dict[str, Any], key: str, challenged: tuple[str, ...], seen: _Seen
) -> list[Credential]:
    credentials: list[Credential] = []
    if section.get("credentials") is None:
        return credentials
    raw = section["credentials"]
    if not isinstance(raw, list):
        r.error(f"{key}.credentials", f"expected a list, got {describe(raw)}")
        return credentials
    for index, item in enumerate(raw):
        credential = read_credential(r, item, f"{key}.credentials[{index}]", challenged, seen)
        if credential is not None:
            credentials.append(credential)
    warn_all_expired(r, credentials, f"{key}.credentials")
    return credentials


def warn_all_expired(r: Reader, credentials: list[Credential], key: str) -> None:
    """A username whose every secret has expired can no longer sign in: say so once."""
    by_user: dict[str, list[Credential]] = {}
    for credential in credentials:
        by_user.setdefault(credential.username, []).append(credential)
    for username, secrets in by_user.items():
        if all(c.valid_until is not None and c.valid_until <= r.now for c in secrets):
            r.warn(key, f"every secret of {username!r} has expired: {username!r} cannot sign in")


def read_credential(
    r: Reader, value: object, key: str, challenged: tuple[str, ...], seen: _Seen
) -> Credential | None:
    section = r.mapping(value, key, CREDENTIAL_KEYS)
    if section is None:
        return None
    username = credential_username(r, section, key, seen)
    secret = credential_secret(r, section, key, challenged)
    valid_until = None
    if section.get("valid_until") is not None:
        where = f"{key}.valid_until"
        valid_until = r.timestamp(section["valid_until"], where)
        if valid_until is None:
            return None
        if valid_until <= r.now:
            r.warn(where, f"expired on {valid_until.isoformat()}")
        elif valid_until - r.now <= EXPIRY_WARNING:
            r.warn(where, f"expires soon, on {valid_until.isoformat()}")
    not_before = None
    if section.get("not_before") is not None:
        not_before = r.timestamp(section["not_before"], f"{key}.not_before")
        if not_before is None:
            return None
        if valid_until is not None and not_before >= valid_until:
            r.error(f"{key}.not_before", "must be before valid_until: this secret never works")
            return None
    if username is None or not secret.ok:
        return None
    return Credential(
        username, secret.password, MappingProxyType(secret.ha1), valid_until, not_before
    )


def credential_username(r: Reader, section: dict[str, Any], key: str, seen: _Seen) -> str | None:
    where = f"{key}.username"
    if "username" not in section:
        r.error(where, "missing")
        return None
    username = r.quotable(section["username"], where)
    if username is None:
        return None
    first = seen.usernames.get(username)
    # "trunks[0].credentials[1]" -> "trunks[0]": a username may repeat within its trunk (one
    # entry per secret, for rotation), never across trunks.
    if first is not None and _trunk_of(first) != _trunk_of(where):
        r.error(
            where,
            f"{username!r}: duplicate; usernames are unique across trunks (see {first})",
        )
        return None
    seen.usernames.setdefault(username, where)
    return username


def _trunk_of(where: str) -> str:
    return where.partition(".credentials[")[0]
