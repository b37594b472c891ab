"""The tenant identity sections: `identity` (signing keys, header prefix, max_age,
strip_inbound) and the trunk sub-key `attributes` (issue 16).

Owns: validating the header prefix, the signing keys (unique ids, each secret from
`secret_file` or `secret_env`, at least 16 bytes), `max_age`, the `strip_inbound` header names,
and each trunk's attribute names and values: a name or value that could not be sent as one
header line (a CR, LF or other control character, surrounding whitespace, too long), or two
names that map to the same header, is an error with its key path.

Never does: print a key, sign anything (`sipguard.identity` does), decide which trunk sends
what.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sipguard.config.reader import Reader, describe
from sipguard.config.secrets import MIN_SECRET_BYTES, environment, read_file
from sipguard.identity import (
    attribute_header,
    attribute_name_problem,
    attribute_value_problem,
    key_id_problem,
    prefix_problem,
)
from sipguard.settings import (
    DEFAULT_HEADER_PREFIX,
    DEFAULT_STRIP_INBOUND,
    IdentitySettings,
    SigningKey,
)

IDENTITY_KEYS = ("header_prefix", "signing_keys", "max_age", "strip_inbound")
SIGNING_KEY_KEYS = ("id", "secret_file", "secret_env")
# A signature older than a day is no signature: the platform should see requests in seconds.
MAX_AGE_LIMIT = 86400
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]{1,64}\Z")  # RFC 3261 §25.1 token


def read_identity(r: Reader, value: object, done: Mapping[str, Any]) -> IdentitySettings | None:
    """`identity`: absent means the plain, unsigned headers."""
    if value is None:
        return None
    section = r.mapping(value, "identity", IDENTITY_KEYS)
    if section is None:
        return None
    before = len(r.problems)
    prefix = r.string(section.get("header_prefix", DEFAULT_HEADER_PREFIX), "identity.header_prefix")
    if prefix is not None and (problem := prefix_problem(prefix)) is not None:
        r.error("identity.header_prefix", f"{prefix!r}: {problem}")
    keys = signing_keys(r, section.get("signing_keys"))
    max_age = r.integer(section.get("max_age", 30), "identity.max_age", 1, MAX_AGE_LIMIT)
    strip: tuple[str, ...] | None = DEFAULT_STRIP_INBOUND
    if "strip_inbound" in section:
        strip = strip_inbound(r, section["strip_inbound"])
    if len(r.problems) != before or prefix is None or not keys or max_age is None:
        return None
    assert strip is not None
    return IdentitySettings(keys, prefix, max_age, strip)


def signing_keys(r: Reader, value: object) -> tuple[SigningKey, ...]:
    where = "identity.signing_keys"
    if value is None:
        r.error(where, "missing: give at least one key (id and secret_file or secret_env)")
        return ()
    if not isinstance(value, list):
        r.error(where, f"expected a list, got {describe(value)}")
        return ()
    if not value:
        r.error(where, "empty: give at least one key (id and secret_file or secret_env)")
        return ()
    keys: list[SigningKey] = []
    ids: dict[str, str] = {}
    for index, item in enumerate(value):
        key = signing_key(r, item, f"{where}[{index}]", ids)
        if key is not None:
            keys.append(key)
    return tuple(keys)


def signing_key(r: Reader, value: object, key: str, ids: dict[str, str]) -> SigningKey | None:
    section = r.mapping(value, key, SIGNING_KEY_KEYS)
    if section is None:
        return None
    key_id = None
    if "id" not in section:
        r.error(f"{key}.id", "missing")
    else:
        key_id = r.string(section["id"], f"{key}.id")
        if key_id is not None and (problem := key_id_problem(key_id)) is not None:
            r.error(f"{key}.id", f"{key_id!r}: {problem}")
            key_id = None
        elif key_id is not None and key_id in ids:
            r.error(f"{key}.id", f"{key_id!r}: duplicate key id (see {ids[key_id]})")
            key_id = None
        elif key_id is not None:
            ids[key_id] = f"{key}.id"
    secret, source = signing_secret(r, section, key)
    if key_id is None or secret is None or source is None:
        return None
    return SigningKey(key_id, secret, source)


def signing_secret(r: Reader, section: dict[str, Any], key: str) -> tuple[bytes | None, str | None]:
    """A signing key's secret from secret_file or secret_env: (secret, source description)."""
    if ("secret_file" in section) == ("secret_env" in section):
        r.error(key, "give exactly one of secret_file and secret_env")
        return None, None
    if "secret_file" in section:
        where = f"{key}.secret_file"
        text = r.string(section["secret_file"], where)
        if text is None:
            return None, None
        data = read_file(r, text, where, "key file")
        source = f"file:{r.file_path(text)}"
    else:
        where = f"{key}.secret_env"
        found = environment(r, section["secret_env"], where)
        if found is None:
            return None, None
        data = found.encode("utf-8")
        source = f"env:{section['secret_env']}"
    if data is None:
        return None, None
    data = data.rstrip(b"\r\n")  # `openssl rand -hex 32 > file` ends with a newline
    if len(data) < MIN_SECRET_BYTES:
        r.error(where, f"the secret is shorter than {MIN_SECRET_BYTES} bytes")
        return None, None
    return data, source


def strip_inbound(r: Reader, value: object) -> tuple[str, ...] | None:
    where = "identity.strip_inbound"
    if not isinstance(value, list):
        r.error(where, f"expected a list of header names, got {describe(value)}")
        return None
    names: list[str] = []
    for index, item in enumerate(value):
        name = r.string(item, f"{where}[{index}]")
        if name is None:
            continue
        if not _HEADER_NAME.match(name):
            r.error(f"{where}[{index}]", f"{name!r}: not a header name (1-64 token characters)")
            continue
        names.append(name)
    return tuple(names)


def read_attributes(r: Reader, value: object, key: str) -> tuple[tuple[str, str], ...] | None:
    """`trunks[].attributes`: name -> value, each sent as `<prefix>Attr-<Name>: value`."""
    if not isinstance(value, dict):
        r.error(key, f"expected a mapping of names to values, got {describe(value)}")
        return None
    before = len(r.problems)
    found: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str):
            r.error(key, f"attribute name {name!r} is not a string; quote it")
            continue
        where = f"{key}.{name}"
        if (problem := attribute_name_problem(name)) is not None:
            r.error(where, f"attribute name {problem}")
            continue
        header = attribute_header("", name).lower()
        if header in headers:
            r.error(where, f"same header as {headers[header]} ('-' and '_' and case do not count)")
            continue
        headers[header] = where
        if not isinstance(text, str):
            r.error(where, f"expected a string, got {describe(text)}; quote the value")
            continue
        if (problem := attribute_value_problem(text)) is not None:
            r.error(where, f"value {problem}")
            continue
        found.append((name, text))
    if len(r.problems) != before:
        return None
    return tuple(found)
