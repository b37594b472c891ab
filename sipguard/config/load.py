"""The entry points: load a config file into `Settings`, and `sipguard check-config`.

Owns: the table of top-level sections (`SECTIONS`: key -> reader, in the order the keys are
listed in messages), the order they are read in, building `Settings`, the check-config summary.

Never does: log (callers log the warnings returned), start anything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sipguard.config.admin import read_admin
from sipguard.config.auth import read_auth, read_trunks
from sipguard.config.document import parse_yaml
from sipguard.config.health import read_upstream_health
from sipguard.config.identity import read_identity
from sipguard.config.network import (
    read_listeners,
    read_tls,
    read_upstream_source_port,
    read_upstreams,
)
from sipguard.config.observability import read_log, read_metrics
from sipguard.config.protection import read_limits, read_protection
from sipguard.config.reader import Reader
from sipguard.config.secrets import check_config_mode
from sipguard.config.state import read_state
from sipguard.config.workers import read_workers
from sipguard.errors import ConfigError
from sipguard.exits import EX_CONFIG, EX_OK
from sipguard.settings import AdminSettings, Settings

SectionReader = Callable[[Reader, object, Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Section:
    """A top-level key: its reader makes the `Settings` field of the same name.

    The reader gets the value (or `absent` when the key is not in the file), and `done`: the
    values of the sections read before it. Sections are read in table order, `early` ones first
    (a section another one reads from `done` is early, or comes before that one)."""

    key: str
    read: SectionReader
    absent: object = None
    early: bool = False


SECTIONS: tuple[Section, ...] = (
    Section("listen", read_listeners),
    Section("tls", read_tls),  # reads listen and limits
    Section("upstream", read_upstreams),
    Section("upstream_health", read_upstream_health),
    Section("auth", read_auth),
    Section("trunks", read_trunks),  # reads auth
    Section("metrics", read_metrics),
    Section("log", read_log, absent={}),
    Section("limits", read_limits, absent={}, early=True),
    Section("protection", read_protection, absent={}),
    Section("state", read_state, absent={}),
    Section("admin", read_admin),  # reads metrics
    Section("identity", read_identity),
    Section("workers", read_workers),
    Section("upstream_source_port", read_upstream_source_port),  # reads listen, upstream, workers
)


def read_document(r: Reader, document: object, digest: str = "") -> Settings | None:
    """Every section of a parsed document; None when a problem was recorded in `r`."""
    top = r.mapping(document, "", tuple(section.key for section in SECTIONS))
    if top is None:
        return None
    order = [s for s in SECTIONS if s.early] + [s for s in SECTIONS if not s.early]
    done: dict[str, Any] = {}
    for section in order:
        done[section.key] = section.read(r, top.get(section.key, section.absent), done)
    if r.problems:
        return None
    return Settings(source=r.path, source_sha256=digest, **done)


def load_settings_with_warnings(
    path: str, *, environ: Mapping[str, str] | None = None, now: datetime | None = None
) -> tuple[Settings, list[str]]:
    """Load and validate `path`. Raises ConfigError listing every problem.

    `environ` (default os.environ) serves secret_env/password_env; `now` (default the current
    UTC time) decides which credentials have expired or expire soon."""
    document, problems, digest = parse_yaml(path)
    if document is None:
        raise ConfigError(problems)
    reader = Reader(path, os.environ if environ is None else environ, now or datetime.now(UTC))
    settings = read_document(reader, document, digest)
    check_config_mode(reader)
    problems.extend(reader.problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings, reader.warnings


def load_settings(path: str) -> Settings:
    """Load and validate `path`. Raises ConfigError listing every problem."""
    return load_settings_with_warnings(path)[0]


def load_admin_settings(path: str) -> AdminSettings | None:
    """The `admin` section of `path` alone (`sipguard admin`): the rest of the file may be
    broken, which is when an operator asks the daemon why a reload was refused. Raises
    ConfigError for the file or the section's own problems; None when there is no section."""
    document, _, _ = parse_yaml(path)
    reader = Reader(path, os.environ, datetime.now(UTC))
    top = document if isinstance(document, dict) else {}
    admin = read_admin(reader, top.get("admin"), {})
    if reader.problems:
        raise ConfigError(reader.problems)
    return admin


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
