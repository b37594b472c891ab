"""Lifecycle lines outside the observer's per-decision vocabulary, and how an unexpected error is
written in one.

Owns: `note` (a line to the observer's logger, else to stderr), `StderrObserver` (the observer
of `run_from_file` when it is given none), `describe_error` with `MAX_ERROR_CHARS`.

Never does: a per-message line (the observer logs decisions), a secret in a line (an error is
written by type and message, and the config loader never puts a secret into a message).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from sipguard.transport import NullObserver

# A reload error that is not a ConfigError is reported by type and message; the message is cut
# so that a pathological one cannot flood the log (secrets never reach exception messages: the
# config loader names files and keys, never their content).
MAX_ERROR_CHARS = 300


def describe_error(exc: BaseException) -> str:
    """`Type: message` of an unexpected error, on one line and at most MAX_ERROR_CHARS."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def note(observer: Any, level: str, event: str, **fields: Any) -> None:
    """A lifecycle line outside the observer's vocabulary: to its structlog logger when it has
    one (the JSON log of `sipguard run`), else one `sipguard: EVENT: k=v` line on stderr."""
    logger = getattr(observer, "logger", None)
    method = getattr(logger, level, None) if logger is not None else None
    if callable(method):
        method(event, **fields)
        return
    detail = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f"sipguard: {event}: {detail}" if detail else f"sipguard: {event}", file=sys.stderr)


class StderrObserver(NullObserver):
    """The fallback when `run_from_file` is given no observer: lifecycle events only, one line
    each on stderr (`sipguard: EVENT: detail`), never a per-message line."""

    def _say(self, event: str, detail: str = "") -> None:
        print(f"sipguard: {event}: {detail}" if detail else f"sipguard: {event}", file=sys.stderr)

    def started(self, listeners: Sequence[str]) -> None:
        self._say("started", " ".join(listeners))

    def listener_error(self, listener: str, detail: str) -> None:
        self._say("listener_error", f"{listener}: {detail}")

    def config_reloaded(self, settings: Any) -> None:
        self._say("config_reloaded", str(getattr(settings, "source", "")))

    def config_reload_failed(self, problems: list[str]) -> None:
        for problem in problems:
            self._say("config_reload_failed", problem)

    def stopping(self) -> None:
        self._say("stopping")
