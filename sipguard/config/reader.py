"""Reading a parsed YAML document with key paths: typed access and the problem collector.

Owns: `Reader`, which every section reader is handed. It checks one value at a time (mapping,
string, choice, integer, number, boolean, list of strings, algorithms, IP literal, port,
timestamp), and on a bad value records `FILE: key.path: what is wrong` and returns None, so a
section reader goes on and EVERY problem of the file is reported at once. Warnings are
collected the same way. It also resolves the file paths the config names (relative to the
config's folder).

Never does: read files (`sipguard.config.files`), know a section, quote a secret value (callers
say `secret=True`, and the message then names only the type).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from sipguard.settings import ALGORITHMS

T = TypeVar("T")

_PORT = re.compile(r"[1-9][0-9]{0,4}\Z")
# RFC 3261 §25.1 quoted-string content: no DQUOTE, backslash or control characters, so the realm
# and usernames can be put in a challenge and compared without escaping games.
QUOTABLE = re.compile(r"[^\"\\\x00-\x1f\x7f]+\Z")
UNQUOTABLE = "must not contain quotes, backslashes or control characters"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def describe(value: object, *, secret: bool = False) -> str:
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


class Reader:
    """One validation pass over a parsed document, collecting every problem and warning."""

    def __init__(self, path: str, environ: Mapping[str, str], now: datetime) -> None:
        self.path = path
        self.base = Path(path).resolve().parent
        self.environ = environ
        self.now = now
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.inline_secrets = False  # a password or HA1 is written in the config file itself

    # -- reporting -------------------------------------------------------------------------

    def error(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")

    def file_path(self, text: str) -> Path:
        """A path named in the config: absolute, or relative to the config's folder."""
        path = Path(text)
        return path if path.is_absolute() else self.base / path

    # -- typed access ----------------------------------------------------------------------

    def mapping(self, value: object, key: str, known: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(key, f"expected a mapping, got {describe(value)}")
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
        got = describe(value, secret=secret)
        self.error(key, f"expected a string, got {got}; quote the value")
        return None

    def quotable(self, value: object, key: str) -> str | None:
        """A string fit for a quoted-string in a challenge (a realm, a username)."""
        text = self.string(value, key)
        if text is not None and not QUOTABLE.match(text):
            self.error(key, UNQUOTABLE)
            return None
        return text

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
            self.error(key, f"expected an integer, got {describe(value)}")
            return None
        if not low <= value <= high:
            self.error(key, f"{value} is out of range {low}..{high}")
            return None
        return value

    def number(self, value: object, key: str, low: float, high: float) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected a number of seconds, got {describe(value)}")
            return None
        if not low <= value <= high:
            self.error(key, f"{value} is out of range {low:g}..{high:g}")
            return None
        return float(value)

    def boolean(self, value: object, key: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {describe(value)}")
            return None
        return value

    def string_list(self, value: object, key: str) -> list[tuple[str, str]] | None:
        """Items of a list of strings, each with its key path; bad items are reported."""
        return self.parsed_list(value, key, str)

    def parsed_list(
        self, value: object, key: str, parse: Callable[[str], T]
    ) -> list[tuple[str, T]] | None:
        """Items of a list of strings, each parsed by `parse` (once: the value is kept), with
        its key path; bad items are reported in order, including those `parse` refuses with
        ValueError (its message is the problem)."""
        if not isinstance(value, list):
            self.error(key, f"expected a list, got {describe(value)}")
            return None
        items: list[tuple[str, T]] = []
        for index, item in enumerate(value):
            where = f"{key}[{index}]"
            text = self.string(item, where)
            if text is None:
                continue
            try:
                items.append((where, parse(text)))
            except ValueError as exc:
                self.error(where, str(exc))
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
                self.error(key, f"expected an ISO-8601 time, got {describe(value)}")
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            self.error(key, "needs a timezone, e.g. 2027-01-01T00:00:00Z")
            return None
        return value.astimezone(UTC)
