"""Secrets named by the config: the nonce key, credential passwords and HA1 values, and the
small files that hold them.

Owns: `auth.secret_file` / `auth.secret_env` (the nonce HMAC key), a credential's one secret
(`password`, `ha1`, `password_env` or `password_file`), reading a small file the config names
(size-capped), and checking that a TLS file can be read.

Also warns when a file holding a secret (a secret or password file, a TLS private key) is
more open than the README asks (0640: owner read/write, group read, nothing for others).

Never does: put a secret's value in a message (only its key path, its type or the file's path),
log, or keep a file open.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from sipguard.config.reader import ENV_NAME, Reader, describe
from sipguard.settings import ALGORITHMS, HA1_HEX_LENGTH

MIN_SECRET_BYTES = 16  # a nonce HMAC key shorter than 128 bits is guessable offline
MAX_SECRET_FILE_BYTES = 65536  # a key or password file is small; never slurp a log by mistake
SECRET_KINDS = ("password", "ha1", "password_env", "password_file")
PRIVATE_MODE = 0o640  # the most open mode the README asks for a file holding a secret
GEN_KEY_HINT = "make one with `sipguard gen-key /etc/sipguard/nonce.key` and set auth.secret_file"
# A message, not a password (S105):
PASSWORD_EMPTY = "is empty: give the password (quoted), or use ha1, password_env or password_file"  # noqa: S105
_HEX = re.compile(r"[0-9a-fA-F]+\Z")


@dataclass(slots=True)
class CredentialSecret:
    """What a credential's secret key gave: a password, or HA1 values by algorithm."""

    ok: bool = False
    password: str | None = None
    ha1: dict[str, str] = field(default_factory=dict)


def too_open(mode: int) -> bool:
    """Whether a file of this mode is open beyond PRIVATE_MODE (any bit for others, group
    write or execute)."""
    return bool(stat.S_IMODE(mode) & ~PRIVATE_MODE & 0o077)


def warn_if_open(r: Reader, key: str, what: str, path: str, mode: int) -> None:
    if too_open(mode):
        r.warn(
            key,
            f"{what} {path!r} is mode {stat.S_IMODE(mode):04o}: open to more users than its "
            f"owner and group; chmod {PRIVATE_MODE:04o} (or 0600)",
        )


def check_config_mode(r: Reader) -> None:
    """Warn when the config file holds a password or HA1 and is open beyond PRIVATE_MODE."""
    if not r.inline_secrets:
        return
    try:
        mode = os.stat(r.path).st_mode
    except OSError:
        return  # it was read a moment ago; a race with a rename is not worth a message
    if too_open(mode):
        r.warn(
            "",
            f"holds passwords or HA1 values and is mode {stat.S_IMODE(mode):04o}: open to more "
            f"users than its owner and group; chmod {PRIVATE_MODE:04o} (or 0600)",
        )


def read_file(r: Reader, text: str, key: str, what: str) -> bytes | None:
    """Read a small secret file named by the config; errors name the file, never its content."""
    path = r.file_path(text)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
            mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        r.error(key, f"cannot read {what} {str(path)!r}: {exc.strerror or exc}")
        return None
    if len(data) > MAX_SECRET_FILE_BYTES:
        r.error(key, f"{what} {str(path)!r} is larger than {MAX_SECRET_FILE_BYTES} bytes")
        return None
    warn_if_open(r, key, what, str(path), mode)
    return data


def readable(r: Reader, text: str, key: str, what: str, *, private: bool = False) -> str:
    """The resolved path of a file the daemon reads later (TLS); an error if it cannot, a
    warning if it is `private` (a key) and open to others."""
    path = r.file_path(text)
    try:
        with path.open("rb") as handle:
            handle.read(1)
            mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        r.error(key, f"cannot read {what} {str(path)!r}: {exc.strerror or exc}")
        return str(path)
    if private:
        warn_if_open(r, key, what, str(path), mode)
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
            f"not survive a restart and are not shared between instances; {GEN_KEY_HINT}",
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
    if kind in ("password", "ha1"):
        r.inline_secrets = True  # the config file itself holds a password equivalent
    if kind == "password" and section[kind] in (None, ""):
        r.error(where, PASSWORD_EMPTY)  # `password:`, `password: ~` and `password: ""` alike
    elif kind == "password":
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
