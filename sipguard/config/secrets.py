"""Secrets named by the config: the nonce key, credential passwords and HA1 values, and the
small files that hold them.

Owns: `auth.secret_file` / `auth.secret_env` (the nonce HMAC key), a credential's one secret
(`password`, `ha1`, `password_env` or `password_file`), reading a small file the config names
(size-capped), and checking that a TLS file can be read.

Never does: put a secret's value in a message (only its key path, its type or the file's path),
log, or keep a file open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sipguard.config.reader import ENV_NAME, Reader, describe
from sipguard.settings import ALGORITHMS, HA1_HEX_LENGTH

MIN_SECRET_BYTES = 16  # a nonce HMAC key shorter than 128 bits is guessable offline
MAX_SECRET_FILE_BYTES = 65536  # a key or password file is small; never slurp a log by mistake
SECRET_KINDS = ("password", "ha1", "password_env", "password_file")
_HEX = re.compile(r"[0-9a-fA-F]+\Z")


@dataclass(slots=True)
class CredentialSecret:
    """What a credential's secret key gave: a password, or HA1 values by algorithm."""

    ok: bool = False
    password: str | None = None
    ha1: dict[str, str] = field(default_factory=dict)


def read_file(r: Reader, text: str, key: str, what: str) -> bytes | None:
    """Read a small file named by the config; errors name the file, never its content."""
    path = r.file_path(text)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        r.error(key, f"cannot read {what} {str(path)!r}: {exc.strerror or exc}")
        return None
    if len(data) > MAX_SECRET_FILE_BYTES:
        r.error(key, f"{what} {str(path)!r} is larger than {MAX_SECRET_FILE_BYTES} bytes")
        return None
    return data


def readable(r: Reader, text: str, key: str, what: str) -> str:
    """The resolved path of a file the daemon reads later (TLS); an error if it cannot."""
    path = r.file_path(text)
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        r.error(key, f"cannot read {what} {str(path)!r}: {exc.strerror or exc}")
    return str(path)


def environment(r: Reader, value: object, key: str) -> str | None:
    """The value of the environment variable named at `key`; an error if unset or empty."""
    name = r.string(value, key)
    if name is None:
        return None
    if not ENV_NAME.match(name):
        r.error(key, f"{name!r} is not an environment variable name")
        return None
    found = r.environ.get(name)
    if not found:
        r.error(key, f"environment variable {name} is not set or empty")
        return None
    return found


def nonce_key(r: Reader, section: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """The nonce key from auth.secret_file or auth.secret_env: (key, source description)."""
    if "secret_file" in section and "secret_env" in section:
        r.error("auth", "give either secret_file or secret_env, not both")
        return None, None
    if "secret_file" in section:
        key = "auth.secret_file"
        text = r.string(section["secret_file"], key)
        if text is None:
            return None, None
        data = read_file(r, text, key, "secret file")
        source = f"file:{r.file_path(text)}"
    elif "secret_env" in section:
        key = "auth.secret_env"
        env_value = environment(r, section["secret_env"], key)
        if env_value is None:
            return None, None
        data = env_value.encode("utf-8")
        source = f"env:{section['secret_env']}"
    else:
        r.warn(
            "auth",
            "no secret_file or secret_env: a random nonce key per process, so nonces do "
            "not survive a restart and are not shared between instances",
        )
        return None, "random"
    if data is None:
        return None, None
    # A key written by `openssl rand -hex 32 > file` ends with a newline that is not key.
    data = data.rstrip(b"\r\n")
    if len(data) < MIN_SECRET_BYTES:
        r.error(key, f"the secret is shorter than {MIN_SECRET_BYTES} bytes")
        return None, None
    return data, source


def credential_secret(
    r: Reader, section: dict[str, Any], key: str, challenged: tuple[str, ...]
) -> CredentialSecret:
    """The one secret of the credential at `key` (a mapping already checked for keys)."""
    found = CredentialSecret()
    kinds = [kind for kind in SECRET_KINDS if kind in section]
    if len(kinds) != 1:
        given = f" (got {', '.join(kinds)})" if kinds else ""
        r.error(key, f"give exactly one of password, ha1, password_env, password_file{given}")
        return found
    kind = kinds[0]
    where = f"{key}.{kind}"
    if kind == "password":
        found.password = r.string(section[kind], where, secret=True)
    elif kind == "password_env":
        found.password = environment(r, section[kind], where)
    elif kind == "password_file":
        found.password = password_file(r, section[kind], where)
    else:
        return CredentialSecret(
            ha1(r, section[kind], where, challenged, found.ha1), None, found.ha1
        )
    found.ok = found.password is not None
    return found


def password_file(r: Reader, value: object, key: str) -> str | None:
    """The password held by the file named at `key`, without its line end."""
    text = r.string(value, key)
    data = None if text is None else read_file(r, text, key, "password file")
    if data is None:
        return None
    try:
        password = data.rstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError:
        r.error(key, "the password file is not UTF-8")
        return None
    if not password:
        r.error(key, "the password file is empty")
        return None
    return password


def ha1(
    r: Reader, value: object, key: str, challenged: tuple[str, ...], out: dict[str, str]
) -> bool:
    """HA1 values by algorithm into `out`; True when they are usable for this trunk."""
    if not isinstance(value, dict):
        r.error(key, f"expected a mapping of algorithm to hex HA1, got {describe(value)}")
        return False
    if not value:
        r.error(key, "give at least one algorithm: hex HA1 (see `sipguard hash-password`)")
        return False
    ok = True
    for algorithm, digest in value.items():
        ok = ha1_value(r, algorithm, digest, f"{key}.{algorithm}", out) and ok
    if ok and not any(algorithm in out for algorithm in challenged):
        r.error(
            key, f"no HA1 for any algorithm this trunk challenges with ({', '.join(challenged)})"
        )
        return False
    if ok:
        missing = [algorithm for algorithm in challenged if algorithm not in out]
        if missing:
            r.warn(key, f"no HA1 for {', '.join(missing)}: clients choosing it will fail")
    return ok


def ha1_value(
    r: Reader, algorithm: object, digest: object, where: str, out: dict[str, str]
) -> bool:
    if algorithm not in ALGORITHMS:
        r.error(where, f"unknown algorithm (known: {', '.join(ALGORITHMS)})")
        return False
    assert isinstance(algorithm, str)
    length = HA1_HEX_LENGTH[algorithm]
    if not isinstance(digest, str):
        r.error(where, f"expected a string of {length} hex digits; quote the value")
        return False
    if len(digest) != length or not _HEX.match(digest):
        r.error(where, f"expected {length} hex digits")
        return False
    out[algorithm] = digest.lower()
    return True
