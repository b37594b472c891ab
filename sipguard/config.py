"""Loading and validating the YAML configuration into frozen `Settings` (DESIGN §3, contract).

Owns: reading the config file (and the secret, password and TLS files it names), YAML with the
safe loader, validation that reports EVERY problem at once as `FILE: key.path: what is wrong`,
load-time warnings, and the `sipguard check-config FILE` command.

Never does: start listeners, open sockets, log (the caller logs problems and warnings), print a
secret. Values that are secret (passwords, HA1, the nonce key) are never quoted in a message, not
even when they have the wrong type.

Rules worth knowing:
- YAML 1.1 traps are errors, not guesses: an unquoted `1:20` is the integer 80 (base 60), `010`
  is 8 (octal), `on`/`yes` are true, an unquoted `*` starts an alias. Where a string is meant, a
  string is demanded, and the message says to quote the value.
- Unknown keys are errors (with the closest known key suggested); duplicate keys are errors
  (PyYAML would silently keep the last one).
- Key paths count list items from 0: `trunks[1]` is the second trunk.
- Relative file paths in the config (secret_file, password_file, tls.*) are relative to the
  directory of the config file.
- Secret, password and certificate files are read at load, hence again on every reload.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from sipguard.errors import ConfigError
from sipguard.policy.whitelist import parse_rule
from sipguard.settings import (
    ALGORITHMS,
    DEFAULT_PORTS,
    HA1_HEX_LENGTH,
    LOG_FORMATS,
    LOG_LEVELS,
    RATE_ACTIONS,
    REFUSE_ACTIONS,
    TRANSPORTS,
    AuthSettings,
    Credential,
    Limits,
    Listener,
    LogSettings,
    MetricsSettings,
    Protection,
    Settings,
    TlsSettings,
    Trunk,
    Upstream,
)

__all__ = ["check_config_command", "load_settings", "load_settings_with_warnings"]

EX_OK = 0
EX_CONFIG = 78  # sysexits EX_CONFIG, as sipguard.cli
MIN_SECRET_BYTES = 16  # a nonce HMAC key shorter than 128 bits is guessable offline
EXPIRY_WARNING = timedelta(days=14)
MAX_SECRET_FILE_BYTES = 65536  # a key or password file is small; never slurp a log by mistake

_TOP_KEYS = (
    "listen",
    "tls",
    "upstream",
    "auth",
    "trunks",
    "metrics",
    "log",
    "limits",
    "protection",
)
_TLS_KEYS = ("certificate", "private_key", "ca_file", "verify_client")
_AUTH_KEYS = ("realm", "algorithms", "nonce_ttl", "secret_file", "secret_env", "refuse")
_TRUNK_KEYS = ("name", "whitelist", "credentials", "algorithms", "allow_open")
_CREDENTIAL_KEYS = ("username", "password", "ha1", "password_env", "password_file", "valid_until")
_SECRET_KINDS = ("password", "ha1", "password_env", "password_file")
_METRICS_KEYS = ("listen",)
_LOG_KEYS = ("level", "format")

_LISTENER = re.compile(
    r"(?P<transport>[a-z]+)://(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]:/]*)):(?P<port>[^:]*)\Z"
)
_HOSTPORT = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]:/]*)):(?P<port>[^:]*)\Z")
_UPSTREAM = re.compile(
    r"sip:(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]:;]*))(?::(?P<port>[^;]*))?(?P<params>(?:;[^;]*)*)\Z"
)
_PORT = re.compile(r"[1-9][0-9]{0,4}\Z")
_TRUNK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # it is a metric label value
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEX = re.compile(r"[0-9a-fA-F]+\Z")
# RFC 3261 §25.1 quoted-string content: no DQUOTE, backslash or control characters, so the realm
# and usernames can be put in a challenge and compared without escaping games.
_QUOTABLE = re.compile(r"[^\"\\\x00-\x1f\x7f]+\Z")
_UNQUOTABLE = "must not contain quotes, backslashes or control characters"


class _DuplicateKeyLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """The safe loader, recording duplicate mapping keys instead of keeping the last silently."""

    duplicates: list[tuple[str, int, int]]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hashable = key in seen
            except TypeError:
                continue  # an unhashable key: the constructor reports it
            if hashable:
                mark = key_node.start_mark
                self.duplicates.append((str(key), mark.line + 1, mark.column + 1))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _describe(value: object, *, secret: bool = False) -> str:
    """What YAML made of a value, for 'expected X, got Y' messages (never the value itself
    when it is `secret`)."""
    if value is None:
        return "nothing (the value is empty)"
    if isinstance(value, bool):
        shown = "a boolean" if secret else str(value).lower()
        return f"{shown} (YAML reads unquoted yes/no/on/off/true/false as booleans)"
    if isinstance(value, int):
        return "an integer (YAML reads unquoted 1:20 as 80 and 010 as 8)"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, datetime | date):
        return "a date"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Loader:
    """One validation pass over a parsed document, collecting every problem."""

    def __init__(self, path: str, environ: Mapping[str, str], now: datetime) -> None:
        self.path = path
        self.base = Path(path).resolve().parent
        self.environ = environ
        self.now = now
        self.problems: list[str] = []
        self.warnings: list[str] = []

    # -- reporting -------------------------------------------------------------------------

    def error(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")

    # -- typed access ----------------------------------------------------------------------

    def mapping(self, value: object, key: str, known: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(key, f"expected a mapping, got {_describe(value)}")
            return None
        for name in value:
            if not isinstance(name, str):
                self.error(key, f"key {name!r} is not a string; quote it")
            elif name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                where = f"{key}.{name}" if key else name
                self.error(where, f"unknown key{hint} (known: {', '.join(known)})")
        return value

    def string(self, value: object, key: str, *, secret: bool = False) -> str | None:
        if isinstance(value, str):
            if not value:
                self.error(key, "must not be empty")
                return None
            return value
        got = _describe(value, secret=secret)
        self.error(key, f"expected a string, got {got}; quote the value")
        return None

    def choice(self, value: object, key: str, choices: tuple[str, ...]) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # `refuse: 403` unquoted is unambiguous
        text = self.string(value, key)
        if text is None:
            return None
        if text not in choices:
            self.error(key, f"{text!r}: must be one of {', '.join(choices)}")
            return None
        return text

    def integer(self, value: object, key: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer, got {_describe(value)}")
            return None
        if not low <= value <= high:
            self.error(key, f"{value} is out of range {low}..{high}")
            return None
        return value

    def number(self, value: object, key: str, low: float, high: float) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected a number of seconds, got {_describe(value)}")
            return None
        if not low <= value <= high:
            self.error(key, f"{value} is out of range {low:g}..{high:g}")
            return None
        return float(value)

    def boolean(self, value: object, key: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {_describe(value)}")
            return None
        return value

    def string_list(
        self, value: object, key: str, check: Callable[[str], object] | None = None
    ) -> list[tuple[str, str]] | None:
        """Items of a list of strings, each with its key path; bad items are reported, in
        order, including those `check` refuses with ValueError."""
        if not isinstance(value, list):
            self.error(key, f"expected a list, got {_describe(value)}")
            return None
        items: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            where = f"{key}[{index}]"
            text = self.string(item, where)
            if text is None:
                continue
            if check is not None:
                try:
                    check(text)
                except ValueError as exc:
                    self.error(where, str(exc))
                    continue
            items.append((where, text))
        return items

    def algorithms(self, value: object, key: str) -> tuple[str, ...] | None:
        before = len(self.problems)
        items = self.string_list(value, key)
        if items is None:
            return None
        if not items and isinstance(value, list) and not value:
            self.error(key, f"must name at least one of {', '.join(ALGORITHMS)}")
            return None
        found: list[str] = []
        for where, name in items:
            if name not in ALGORITHMS:
                self.error(where, f"{name!r}: unknown algorithm (known: {', '.join(ALGORITHMS)})")
            elif name in found:
                self.error(where, f"{name!r} is listed twice")
            else:
                found.append(name)
        return tuple(found) if len(self.problems) == before else None

    def file_path(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else self.base / path

    def read_file(self, text: str, key: str, what: str) -> bytes | None:
        """Read a small file named by the config; errors name the file, never its content."""
        path = self.file_path(text)
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_SECRET_FILE_BYTES + 1)
        except OSError as exc:
            self.error(key, f"cannot read {what} {str(path)!r}: {exc.strerror or exc}")
            return None
        if len(data) > MAX_SECRET_FILE_BYTES:
            self.error(key, f"{what} {str(path)!r} is larger than {MAX_SECRET_FILE_BYTES} bytes")
            return None
        return data

    def readable(self, text: str, key: str, what: str) -> str:
        path = self.file_path(text)
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            self.error(key, f"cannot read {what} {str(path)!r}: {exc.strerror or exc}")
        return str(path)

    # -- sections --------------------------------------------------------------------------

    def load(self, document: object) -> Settings | None:
        top = self.mapping(document, "", _TOP_KEYS)
        if top is None:
            return None
        limits = self.limits(top.get("limits", {}))
        listen = self.listeners(top.get("listen"))
        tls = self.tls(top.get("tls"), limits, listen)
        upstream = self.upstreams(top.get("upstream"))
        auth = self.auth(top.get("auth"))
        trunks = self.trunks(top.get("trunks"), auth)
        metrics = self.metrics(top.get("metrics"))
        log = self.log(top.get("log", {}))
        protection = self.protection(top.get("protection", {}))
        if self.problems:
            return None
        assert listen is not None and upstream is not None and auth is not None
        assert trunks is not None and log is not None and limits is not None
        assert protection is not None
        return Settings(
            source=self.path,
            listen=listen,
            tls=tls,
            upstream=upstream,
            auth=auth,
            trunks=trunks,
            metrics=metrics,
            log=log,
            limits=limits,
            protection=protection,
        )

    def listeners(self, value: object) -> tuple[Listener, ...] | None:
        if value is None:
            self.error("listen", "missing: give at least one transport://address:port")
            return None
        items = self.string_list(value, "listen")
        if items is None:
            return None
        if not items and not value:
            self.error("listen", "give at least one transport://address:port")
        found: list[Listener] = []
        seen: dict[tuple[str, int, int], str] = {}
        for where, text in items:
            match = _LISTENER.match(text)
            if match is None:
                self.error(
                    where,
                    f"{text!r}: expected transport://address:port, e.g. udp://127.0.0.1:5060 "
                    "or tls://[::1]:5061 (IPv6 in brackets)",
                )
                continue
            transport = match["transport"]
            if transport not in TRANSPORTS:
                self.error(where, f"{text!r}: transport must be one of {', '.join(TRANSPORTS)}")
                continue
            host = self.ip_literal(match["v6"], match["host"], where, text)
            port = self.port(match["port"], where, text)
            if host is None or port is None:
                continue
            identity = (transport, int(ipaddress.ip_address(host)), port)
            if identity in seen:
                self.error(where, f"{text!r}: duplicate of {seen[identity]}")
                continue
            seen[identity] = where
            if host == "::":
                # An IPv6 socket is IPv6-only (IPV6_V6ONLY): IPv4 needs its own listener.
                self.warn(
                    where,
                    f"{text!r} receives IPv6 only; add {transport}://0.0.0.0:{port} for IPv4",
                )
            found.append(Listener(transport, host, port))
        return tuple(found)

    def ip_literal(self, v6: str | None, host: str | None, where: str, text: str) -> str | None:
        """An IP literal without brackets, strictly written (no names, zones, leading zeros)."""
        if v6 is not None:
            if "%" in v6:
                self.error(where, f"{text!r}: zone ids are not supported")
                return None
            try:
                return str(ipaddress.IPv6Address(v6))
            except ValueError:
                self.error(where, f"{text!r}: {v6!r} is not an IPv6 address")
                return None
        assert host is not None
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            pass
        if ":" in host:
            self.error(where, f"{text!r}: put an IPv6 address in brackets, e.g. [::1]")
        else:
            self.error(
                where,
                f"{text!r}: {host!r} is not an IP address; sipguard does no DNS at runtime, "
                "so give an IP literal",
            )
        return None

    def port(self, text: str | None, where: str, whole: str) -> int | None:
        if text is None or not _PORT.match(text) or int(text) > 65535:
            self.error(where, f"{whole!r}: the port must be 1..65535")
            return None
        return int(text)

    def tls(
        self, value: object, limits: Limits | None, listen: tuple[Listener, ...] | None
    ) -> TlsSettings | None:
        wanted = any(listener.transport == "tls" for listener in listen or ())
        if value is None:
            if wanted:
                self.error("tls", "missing: a tls:// listener needs certificate and private_key")
            return None
        section = self.mapping(value, "tls", _TLS_KEYS)
        if section is None:
            return None
        if not wanted:
            self.warn("tls", "no tls:// listener uses this section")
        paths: dict[str, str | None] = {}
        for key, what in (("certificate", "certificate"), ("private_key", "private key")):
            if key not in section:
                self.error(f"tls.{key}", "missing")
                paths[key] = None
                continue
            text = self.string(section[key], f"tls.{key}")
            paths[key] = None if text is None else self.readable(text, f"tls.{key}", what)
        ca_file = None
        if section.get("ca_file") is not None:
            text = self.string(section["ca_file"], "tls.ca_file")
            if text is not None:
                ca_file = self.readable(text, "tls.ca_file", "CA file")
        verify = self.boolean(section.get("verify_client", False), "tls.verify_client")
        if verify and ca_file is None:
            self.error("tls.verify_client", "needs tls.ca_file to verify client certificates")
        certificate, private_key = paths["certificate"], paths["private_key"]
        if certificate is None or private_key is None or verify is None:
            return None
        timeout = (limits or Limits()).tls_handshake_timeout
        return TlsSettings(certificate, private_key, ca_file, verify, timeout)

    def upstreams(self, value: object) -> tuple[Upstream, ...] | None:
        if value is None:
            self.error("upstream", "missing: give at least one sip:HOST[:PORT][;transport=...]")
            return None
        items = self.string_list(value, "upstream")
        if items is None:
            return None
        if not items and not value:
            self.error("upstream", "give at least one sip:HOST[:PORT][;transport=...]")
        found: list[Upstream] = []
        seen: dict[tuple[str, str, int], str] = {}
        for where, text in items:
            upstream = self.upstream(text, where)
            if upstream is None:
                continue
            identity = (upstream.transport, upstream.host, upstream.port)
            if identity in seen:
                self.error(where, f"{text!r}: duplicate of {seen[identity]}")
                continue
            seen[identity] = where
            found.append(upstream)
        return tuple(found)

    def upstream(self, text: str, where: str) -> Upstream | None:
        match = _UPSTREAM.match(text)
        if match is None:
            self.error(
                where,
                f"{text!r}: expected sip:HOST[:PORT][;transport=udp|tcp|tls], "
                "e.g. sip:127.0.0.1:5070;transport=udp (IPv6 in brackets)",
            )
            return None
        transport = "udp"
        for param in filter(None, match["params"].split(";")):
            name, _, param_value = param.partition("=")
            # RFC 3261 §19.1.4: URI parameter names and transport values compare case-insensitively.
            if name.lower() != "transport":
                self.error(where, f"{text!r}: unsupported URI parameter {name!r}")
                return None
            transport = param_value.lower()
            if transport not in TRANSPORTS:
                self.error(where, f"{text!r}: transport must be one of {', '.join(TRANSPORTS)}")
                return None
        host = self.ip_literal(match["v6"], match["host"], where, text)
        if match["port"] is None:
            port: int | None = DEFAULT_PORTS[transport]  # RFC 3261 §19.1.2
        else:
            port = self.port(match["port"], where, text)
        if host is None or port is None:
            return None
        return Upstream(text, transport, host, port)

    def auth(self, value: object) -> AuthSettings | None:
        if value is None:
            self.error("auth", "missing: give at least auth.realm")
            return None
        section = self.mapping(value, "auth", _AUTH_KEYS)
        if section is None:
            return None
        realm = None
        if "realm" not in section:
            self.error("auth.realm", "missing")
        else:
            realm = self.string(section["realm"], "auth.realm")
            if realm is not None and not _QUOTABLE.match(realm):
                self.error(
                    "auth.realm", "must not contain quotes, backslashes or control characters"
                )
                realm = None
        algorithms: tuple[str, ...] | None = ("MD5",)
        if "algorithms" in section:
            algorithms = self.algorithms(section["algorithms"], "auth.algorithms")
        nonce_ttl = self.integer(section.get("nonce_ttl", 300), "auth.nonce_ttl", 1, 86400)
        refuse = self.choice(section.get("refuse", "403"), "auth.refuse", REFUSE_ACTIONS)
        secret, source = self.secret(section)
        if realm is None or algorithms is None or nonce_ttl is None or refuse is None:
            return None
        if source is None:
            return None
        return AuthSettings(realm, algorithms, nonce_ttl, secret, source, refuse)

    def secret(self, section: dict[str, Any]) -> tuple[bytes | None, str | None]:
        """The nonce key from auth.secret_file or auth.secret_env: (key, source description)."""
        if "secret_file" in section and "secret_env" in section:
            self.error("auth", "give either secret_file or secret_env, not both")
            return None, None
        if "secret_file" in section:
            text = self.string(section["secret_file"], "auth.secret_file")
            if text is None:
                return None, None
            data = self.read_file(text, "auth.secret_file", "secret file")
            source = f"file:{self.file_path(text)}"
            key = "auth.secret_file"
        elif "secret_env" in section:
            name = self.string(section["secret_env"], "auth.secret_env")
            if name is None:
                return None, None
            if not _ENV_NAME.match(name):
                self.error("auth.secret_env", f"{name!r} is not an environment variable name")
                return None, None
            env_value = self.environ.get(name)
            if not env_value:
                self.error("auth.secret_env", f"environment variable {name} is not set or empty")
                return None, None
            data = env_value.encode("utf-8")
            source = f"env:{name}"
            key = "auth.secret_env"
        else:
            self.warn(
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
            self.error(key, f"the secret is shorter than {MIN_SECRET_BYTES} bytes")
            return None, None
        return data, source

    def trunks(self, value: object, auth: AuthSettings | None) -> tuple[Trunk, ...] | None:
        if value is None:
            self.error("trunks", "missing: give at least one trunk")
            return None
        if not isinstance(value, list):
            self.error("trunks", f"expected a list, got {_describe(value)}")
            return None
        if not value:
            self.warn("trunks", "no trunks: every request will be refused")
        found: list[Trunk] = []
        names: dict[str, str] = {}
        usernames: dict[str, str] = {}
        for index, item in enumerate(value):
            trunk = self.trunk(item, f"trunks[{index}]", auth, names, usernames)
            if trunk is not None:
                found.append(trunk)
        return tuple(found)

    def trunk(
        self,
        value: object,
        key: str,
        auth: AuthSettings | None,
        names: dict[str, str],
        usernames: dict[str, str],
    ) -> Trunk | None:
        section = self.mapping(value, key, _TRUNK_KEYS)
        if section is None:
            return None
        before = len(self.problems)
        name = None
        if "name" not in section:
            self.error(f"{key}.name", "missing")
        else:
            name = self.string(section["name"], f"{key}.name")
            if name is not None and not _TRUNK_NAME.match(name):
                self.error(
                    f"{key}.name",
                    f"{name!r}: use 1-64 letters, digits, '_', '.' or '-' (it is a metric label)",
                )
                name = None
            elif name is not None and name in names:
                self.error(f"{key}.name", f"{name!r}: duplicate trunk name (see {names[name]})")
                name = None
            elif name is not None:
                names[name] = f"{key}.name"
        rules: list[str] = []
        if section.get("whitelist") is not None:
            items = self.string_list(section["whitelist"], f"{key}.whitelist", parse_rule)
            rules = [text for _, text in items or []]
        algorithms = None
        if section.get("algorithms") is not None:
            algorithms = self.algorithms(section["algorithms"], f"{key}.algorithms")
        challenged = algorithms or (auth.algorithms if auth else ALGORITHMS)
        credentials: list[Credential] = []
        if section.get("credentials") is not None:
            raw = section["credentials"]
            if not isinstance(raw, list):
                self.error(f"{key}.credentials", f"expected a list, got {_describe(raw)}")
            else:
                for index, item in enumerate(raw):
                    where = f"{key}.credentials[{index}]"
                    credential = self.credential(item, where, challenged, usernames)
                    if credential is not None:
                        credentials.append(credential)
        allow_open = self.boolean(section.get("allow_open", False), f"{key}.allow_open")
        if allow_open is None:
            return None
        if not section.get("whitelist") and not section.get("credentials"):
            if not allow_open:
                self.error(
                    key,
                    "neither a whitelist nor credentials: this trunk would admit anyone "
                    "(an open relay); set allow_open: true if that is really meant",
                )
                return None
            self.warn(key, "open trunk: admits every source without authentication")
        elif allow_open:
            self.warn(
                f"{key}.allow_open", "has no effect on a trunk with a whitelist or credentials"
            )
        if algorithms is not None and not credentials:
            self.warn(f"{key}.algorithms", "has no effect on a trunk without credentials")
        if len(self.problems) != before or name is None:
            return None
        return Trunk(name, tuple(rules), tuple(credentials), algorithms, allow_open)

    def credential(
        self,
        value: object,
        key: str,
        challenged: tuple[str, ...],
        usernames: dict[str, str],
    ) -> Credential | None:
        section = self.mapping(value, key, _CREDENTIAL_KEYS)
        if section is None:
            return None
        username = None
        if "username" not in section:
            self.error(f"{key}.username", "missing")
        else:
            username = self.string(section["username"], f"{key}.username")
            if username is not None and not _QUOTABLE.match(username):
                self.error(
                    f"{key}.username", "must not contain quotes, backslashes or control characters"
                )
                username = None
            elif username is not None and username in usernames:
                self.error(
                    f"{key}.username",
                    f"{username!r}: duplicate; usernames are unique across trunks "
                    f"(see {usernames[username]})",
                )
                username = None
            elif username is not None:
                usernames[username] = f"{key}.username"
        kinds = [kind for kind in _SECRET_KINDS if kind in section]
        password: str | None = None
        ha1: dict[str, str] = {}
        secret_ok = False
        if len(kinds) != 1:
            given = f" (got {', '.join(kinds)})" if kinds else ""
            self.error(
                key, f"give exactly one of password, ha1, password_env, password_file{given}"
            )
        elif kinds[0] == "password":
            password = self.string(section["password"], f"{key}.password", secret=True)
            secret_ok = password is not None
        elif kinds[0] == "password_env":
            name = self.string(section["password_env"], f"{key}.password_env")
            if name is not None and not _ENV_NAME.match(name):
                self.error(f"{key}.password_env", f"{name!r} is not an environment variable name")
            elif name is not None:
                password = self.environ.get(name) or None
                if password is None:
                    self.error(
                        f"{key}.password_env", f"environment variable {name} is not set or empty"
                    )
                secret_ok = password is not None
        elif kinds[0] == "password_file":
            text = self.string(section["password_file"], f"{key}.password_file")
            data = (
                None
                if text is None
                else self.read_file(text, f"{key}.password_file", "password file")
            )
            if data is not None:
                try:
                    password = data.rstrip(b"\r\n").decode("utf-8")
                except UnicodeDecodeError:
                    self.error(f"{key}.password_file", "the password file is not UTF-8")
                else:
                    if not password:
                        self.error(f"{key}.password_file", "the password file is empty")
                        password = None
                secret_ok = password is not None
        else:
            secret_ok = self.ha1(section["ha1"], f"{key}.ha1", challenged, ha1)
        valid_until = None
        if section.get("valid_until") is not None:
            valid_until = self.timestamp(section["valid_until"], f"{key}.valid_until")
            if valid_until is None:
                return None
            if valid_until <= self.now:
                self.warn(f"{key}.valid_until", f"expired on {valid_until.isoformat()}")
            elif valid_until - self.now <= EXPIRY_WARNING:
                self.warn(f"{key}.valid_until", f"expires soon, on {valid_until.isoformat()}")
        if username is None or not secret_ok:
            return None
        return Credential(username, password, MappingProxyType(ha1), valid_until)

    def ha1(
        self, value: object, key: str, challenged: tuple[str, ...], out: dict[str, str]
    ) -> bool:
        if not isinstance(value, dict):
            self.error(key, f"expected a mapping of algorithm to hex HA1, got {_describe(value)}")
            return False
        if not value:
            self.error(key, "give at least one algorithm: hex HA1 (see `sipguard hash-password`)")
            return False
        ok = True
        for algorithm, digest in value.items():
            where = f"{key}.{algorithm}"
            if algorithm not in ALGORITHMS:
                self.error(where, f"unknown algorithm (known: {', '.join(ALGORITHMS)})")
                ok = False
                continue
            length = HA1_HEX_LENGTH[algorithm]
            if not isinstance(digest, str):
                self.error(where, f"expected a string of {length} hex digits; quote the value")
                ok = False
            elif len(digest) != length or not _HEX.match(digest):
                self.error(where, f"expected {length} hex digits")
                ok = False
            else:
                out[algorithm] = digest.lower()
        if ok and not any(algorithm in out for algorithm in challenged):
            self.error(
                key,
                f"no HA1 for any algorithm this trunk challenges with ({', '.join(challenged)})",
            )
            return False
        if ok:
            missing = [algorithm for algorithm in challenged if algorithm not in out]
            if missing:
                self.warn(key, f"no HA1 for {', '.join(missing)}: clients choosing it will fail")
        return ok

    def timestamp(self, value: object, key: str) -> datetime | None:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                self.error(key, f"{value!r}: expected an ISO-8601 time, e.g. 2027-01-01T00:00:00Z")
                return None
        if not isinstance(value, datetime):
            if isinstance(value, date):
                self.error(key, "give a time and a timezone, e.g. 2027-01-01T00:00:00Z")
            else:
                self.error(key, f"expected an ISO-8601 time, got {_describe(value)}")
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            self.error(key, "needs a timezone, e.g. 2027-01-01T00:00:00Z")
            return None
        return value.astimezone(UTC)

    def metrics(self, value: object) -> MetricsSettings | None:
        if value is None:
            return None
        section = self.mapping(value, "metrics", _METRICS_KEYS)
        if section is None:
            return None
        if "listen" not in section:
            self.error("metrics.listen", "missing: give address:port, e.g. 127.0.0.1:9460")
            return None
        text = self.string(section["listen"], "metrics.listen")
        if text is None:
            return None
        match = _HOSTPORT.match(text)
        if match is None:
            self.error("metrics.listen", f"{text!r}: expected address:port, e.g. 127.0.0.1:9460")
            return None
        host = self.ip_literal(match["v6"], match["host"], "metrics.listen", text)
        port = self.port(match["port"], "metrics.listen", text)
        if host is None or port is None:
            return None
        return MetricsSettings(host, port)

    def log(self, value: object) -> LogSettings | None:
        section = self.mapping(value, "log", _LOG_KEYS)
        if section is None:
            return None
        level = self.choice(section.get("level", "info"), "log.level", LOG_LEVELS)
        fmt = self.choice(section.get("format", "auto"), "log.format", LOG_FORMATS)
        if level is None or fmt is None:
            return None
        return LogSettings(level, fmt)

    def limits(self, value: object) -> Limits | None:
        names = tuple(f.name for f in dataclasses.fields(Limits))
        section = self.mapping(value, "limits", names)
        if section is None:
            return None
        values: dict[str, Any] = {}
        defaults = Limits()
        for name in names:
            if name not in section:
                continue
            default = getattr(defaults, name)
            if isinstance(default, float):
                values[name] = self.number(section[name], f"limits.{name}", 0.001, 86400.0)
            else:
                values[name] = self.integer(section[name], f"limits.{name}", 1, 2**31 - 1)
        if any(v is None for v in values.values()):
            return None
        return Limits(**values)

    def protection(self, value: object) -> Protection | None:
        names = tuple(f.name for f in dataclasses.fields(Protection))
        section = self.mapping(value, "protection", names)
        if section is None:
            return None
        values: dict[str, Any] = {}
        checks: dict[str, Callable[[object, str], Any]] = {
            "ban_failures": lambda v, k: self.integer(v, k, 1, 1_000_000),
            "ban_window": lambda v, k: self.number(v, k, 0.001, 86400.0 * 30),
            "ban_duration": lambda v, k: self.number(v, k, 0.0, 86400.0 * 365),
            "rate": lambda v, k: self.number(v, k, 0.001, 1e9),
            "burst": lambda v, k: self.integer(v, k, 1, 2**31 - 1),
            "rate_action": lambda v, k: self.choice(v, k, RATE_ACTIONS),
            "never_ban": self.rules,
            "scanner_user_agents": self.user_agents,
        }
        for name in names:
            if name in section:
                values[name] = checks[name](section[name], f"protection.{name}")
        if any(v is None for v in values.values()):
            return None
        return Protection(**values)

    def rules(self, value: object, key: str) -> tuple[str, ...] | None:
        before = len(self.problems)
        items = self.string_list(value, key, parse_rule)
        if items is None:
            return None
        return tuple(text for _, text in items) if len(self.problems) == before else None

    def user_agents(self, value: object, key: str) -> tuple[str, ...] | None:
        before = len(self.problems)
        items = self.string_list(value, key)
        if items is None:
            return None
        for where, text in items:
            if not text.isascii() or not text.isprintable():
                self.error(where, "use printable ASCII (User-Agent values are matched as bytes)")
        return tuple(text for _, text in items) if len(self.problems) == before else None


def _parse_yaml(path: str) -> tuple[object, list[str]]:
    """The document and the problems met reading it (unreadable file, YAML syntax)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 (byte {exc.start})"]) from None
    loader = _DuplicateKeyLoader(text)
    loader.duplicates = []
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        if "alias" in problem:
            problem += (
                " (an unquoted * starts a YAML alias: quote wildcard entries like '10.*.*.*')"
            )
        raise ConfigError([f"{path}: {where}YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: YAML error: {exc}"]) from None
    finally:
        loader.dispose()
    problems = [
        f"{path}: line {line}, column {column}: duplicate key {key!r}"
        for key, line, column in loader.duplicates
    ]
    if document is None:
        problems.append(f"{path}: the file is empty")
    return document, problems


def load_settings_with_warnings(
    path: str, *, environ: Mapping[str, str] | None = None, now: datetime | None = None
) -> tuple[Settings, list[str]]:
    """Load and validate `path`. Raises ConfigError listing every problem.

    `environ` (default os.environ) serves secret_env/password_env; `now` (default the current
    UTC time) decides which credentials have expired or expire soon."""
    document, problems = _parse_yaml(path)
    if document is None:
        raise ConfigError(problems)
    loader = _Loader(path, os.environ if environ is None else environ, now or datetime.now(UTC))
    settings = loader.load(document)
    problems.extend(loader.problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings, loader.warnings


def load_settings(path: str) -> Settings:
    """Load and validate `path`. Raises ConfigError listing every problem."""
    return load_settings_with_warnings(path)[0]


def check_config_command(path: str) -> int:
    """`sipguard check-config FILE`: 0 and a summary on stdout, or 78 and every error."""
    try:
        settings, warnings = load_settings_with_warnings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); configuration refused", file=sys.stderr)
        return EX_CONFIG
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rules = sum(len(trunk.whitelist) for trunk in settings.trunks)
    credentials = sum(len(trunk.credentials) for trunk in settings.trunks)
    print(
        f"{path}: OK: {len(settings.listen)} listener(s), {len(settings.upstream)} upstream(s), "
        f"{len(settings.trunks)} trunk(s), {rules} whitelist rule(s), "
        f"{credentials} credential(s), {len(warnings)} warning(s)"
    )
    return EX_OK
