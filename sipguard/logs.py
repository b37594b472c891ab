"""Structured logs of sipguard: one JSON line per decision on stdout (structlog + orjson).

Owns: `configure_logging` (level, format, output stream), the `sanitize` processor that every
line passes through, and the level names. The event vocabulary (which decision is which event,
at which level) lives in `sipguard.observer`.

Never does: write a secret. `sanitize` replaces the value of any key named like a secret
(password, ha1, secret, authorization, digest response, nonce key, token) and any
`response="..."`/`password=...` pair inside a value by "[redacted]"; values come from untrusted
headers, so every string is bounded in length (Call-ID: 128 characters) and its control
characters (CR, LF, ESC, C1 controls, U+2028/2029) are escaped as `\\xNN`, so no Call-ID can
forge a second log line or drive a terminal, in JSON (where orjson escapes them anyway) and in
console rendering alike. Never raises into the caller because stdout went away: a log line that
cannot be written is dropped (the daemon keeps serving; metrics still count).

The speed budget is ~5 µs per line (measured by scripts/bench_observe): log decisions, not packets.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, BinaryIO, Final, TextIO, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

LEVELS: Final[dict[str, int]] = {"debug": 10, "info": 20, "warning": 30, "error": 40}
FORMATS: Final[tuple[str, ...]] = ("json", "console", "auto")

REDACTED: Final = "[redacted]"
# Key names that carry secrets (RFC 7616 §3.4: a digest `response` with its nonce allows an
# offline guess of the password, so it is as secret as an HA1).
_SECRET_KEY: Final = re.compile(
    r"passw|ha1|secret|authoriz|nonce_key|(?:^|_)response$|token|private_key|credential",
    re.IGNORECASE,
)
# `name=value` pairs inside a value (an Authorization header quoted in a detail, say).
_SECRET_PAIR: Final = re.compile(
    r"(?i)\b(response|password|passwd|ha1|secret|nonce_key)\s*=\s*(\"[^\"]*\"?|[^,;\s]*)"
)

# Length caps per key (characters); the Call-ID is capped at 128 (RFC 3261 §8.1.1.4 wants it
# unique, not long; real ones are < 80). The traceback of a bug may be long.
DEFAULT_CAP: Final = 1024
CAPS: Final[dict[str, int]] = {
    "call_id": 128,
    "user": 128,
    "method": 32,
    "trunk": 128,
    "detail": 512,
    "exception": 16384,
    "event": 128,
}
# Containers are logged up to this many items, nested up to this depth.
MAX_ITEMS: Final = 64
MAX_DEPTH: Final = 4


def _escape_table() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
    table[0x2028] = "\\u2028"  # LINE SEPARATOR and PARAGRAPH SEPARATOR end lines for some
    table[0x2029] = "\\u2029"  # tools (and for JavaScript log viewers)
    return table


_ESCAPES: Final = _escape_table()


def is_secret_key(key: str) -> bool:
    """Whether the value logged under `key` must be replaced by "[redacted]"."""
    return _key_cap(key) == 0


# key -> length cap, 0 meaning "secret: redact". Keys are names in our code, so the dict stays
# small; it is cleared if something ever logs unbounded key names.
_KEY_CAPS: dict[str, int] = {}
_SCALARS: Final = frozenset({int, float, bool, type(None)})


def _key_cap(key: str) -> int:
    cap = _KEY_CAPS.get(key)
    if cap is None:
        cap = 0 if _SECRET_KEY.search(key) else CAPS.get(key, DEFAULT_CAP)
        if len(_KEY_CAPS) > 4096:
            _KEY_CAPS.clear()
        _KEY_CAPS[key] = cap
    return cap


def clean_text(value: str, cap: int = DEFAULT_CAP) -> str:
    """`value` with secret pairs redacted, cut at `cap` characters, control characters escaped."""
    if "=" in value:
        value = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}={REDACTED}", value)
    if len(value) > cap:
        value = f"{value[:cap]}...[{len(value) - cap} more]"
    # isprintable() is a fast C scan; only strings with a control character are rewritten
    if not value.isprintable():
        value = value.translate(_ESCAPES)
    return value


def _clean(value: Any, cap: int, depth: int) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, str):
        return clean_text(value, cap)
    if isinstance(value, bytes | bytearray):
        return clean_text(bytes(value[: cap * 4]).decode("utf-8", "backslashreplace"), cap)
    if depth >= MAX_DEPTH:
        return clean_text(repr(value), cap)
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if is_secret_key(str(k)) else _clean(v, cap, depth + 1)
            for k, v in list(value.items())[:MAX_ITEMS]
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, cap, depth + 1) for v in list(value)[:MAX_ITEMS]]
    return clean_text(str(value), cap)


def sanitize(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact secrets, bound lengths, escape control characters.

    Also puts `timestamp`, `level` and `event` first, for people reading raw lines. The common
    case (short printable strings and numbers) costs one dict lookup and two C scans per field."""
    for key, value in event_dict.items():
        cap = _KEY_CAPS.get(key)
        if cap is None:
            cap = _key_cap(key)
        if cap == 0:
            event_dict[key] = REDACTED
        elif type(value) is str:
            if len(value) > cap or "=" in value or not value.isprintable():
                event_dict[key] = clean_text(value, cap)
        elif type(value) not in _SCALARS:
            event_dict[key] = _clean(value, cap, 0)
    if "timestamp" in event_dict and "level" in event_dict and "event" in event_dict:
        # a dict display keeps the first position of a repeated key: these three come first
        return {
            "timestamp": event_dict["timestamp"],
            "level": event_dict["level"],
            "event": event_dict["event"],
            **event_dict,
        }
    return event_dict


class _UtcTimestamp:
    """structlog processor: `timestamp` as ISO 8601 UTC with microseconds (`...T22:04:35.123456Z`).

    Same output as `TimeStamper(fmt="iso", utc=True)` at a fifth of the cost: the date and time
    of day are formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


def _format_exception(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """`exc_info` -> `exception` (plain traceback text, no locals: they may hold a password)."""
    if "exc_info" in event_dict:
        return structlog.processors.format_exc_info(logger, method_name, event_dict)
    return event_dict


class _SafeBytesLogger(structlog.BytesLogger):
    """A `BytesLogger` that drops a line it cannot write (closed or broken stdout) instead of
    raising into the packet path."""

    __slots__ = ()

    def msg(self, message: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _SafeBytesLoggerFactory(structlog.BytesLoggerFactory):
    __slots__ = ()

    def __call__(self, *args: Any) -> structlog.BytesLogger:
        return _SafeBytesLogger(self._file, name=args[0] if args else None)


class _SafePrintLogger(structlog.PrintLogger):
    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _TextSink(io.RawIOBase):
    """Lets a text-only stream (io.StringIO) receive the JSON bytes."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._text.write(bytes(data).decode("utf-8", "backslashreplace"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


def _isatty(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _binary(stream: IO[Any]) -> BinaryIO:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return cast(BinaryIO, buffer)
    if isinstance(stream, io.TextIOBase):
        return cast(BinaryIO, _TextSink(cast(IO[str], stream)))
    return cast(BinaryIO, stream)


def _text(stream: IO[Any]) -> TextIO:
    if isinstance(stream, io.RawIOBase | io.BufferedIOBase):
        return io.TextIOWrapper(cast(BinaryIO, stream), "utf-8", "backslashreplace", None, True)
    return cast(TextIO, stream)


def configure_logging(
    level: str = "info", format: str = "auto", stream: IO[Any] | None = None
) -> FilteringBoundLogger:
    """Configure structlog for the whole process and return the sipguard logger.

    `format`: "json" (one object per line: timestamp (ISO 8601, UTC), level, event, fields),
    "console" (aligned, human-readable), "auto" (console when `stream` is a terminal, else
    json; under systemd stdout goes to the journal, so json). `stream` defaults to stdout.
    Calling it again (on reload) replaces the configuration for loggers obtained afterwards."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    out = sys.stdout if stream is None else stream
    if format == "auto":
        format = "console" if _isatty(out) else "json"
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        _UtcTimestamp(),
        _format_exception,
        sanitize,
    ]
    factory: Any
    if format == "json":
        renderer: Processor = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = _SafeBytesLoggerFactory(_binary(out))
    else:
        text = _text(out)
        renderer = structlog.dev.ConsoleRenderer(
            colors=_isatty(text),
            exception_formatter=structlog.dev.plain_traceback,
        )
        factory = lambda *args: _SafePrintLogger(text)  # noqa: E731
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    return cast(FilteringBoundLogger, structlog.get_logger("sipguard"))
