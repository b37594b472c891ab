"""One /metrics for the host under `workers: N`: the supervisor's reading of its workers.

Owns: `read_worker` (one worker's exposition text, fetched from the Unix socket it serves it on,
see `sipguard.worker`), `merge` (several exposition texts into one: samples of the same series
are added up, with two exceptions: `*_created` takes the earliest, `sipguard_build_info` the
highest, since neither is a count), and `AggregateEndpoint`, what the supervisor serves on
`metrics.listen`.

Why not prometheus_client's multiprocess mode: it needs every gauge rewritten with a
multiprocess mode and gives up function-backed gauges (`sipguard_bans_active`); reading the
workers' own endpoints keeps `sipguard.metrics` exactly as a lone daemon uses it, and costs one
local round trip per worker and scrape (measured in the README).

Caveat: a worker that died takes its counters with it; the host's sums then fall, which
Prometheus' rate() reads as a counter reset (it loses the increase since the last scrape).

Never does: label anything by worker (the workers are interchangeable), hold state between two
scrapes, or keep a scrape waiting longer than READ_TIMEOUT for a worker that does not answer.
Prometheus text exposition format 0.0.4.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Final

from sipguard.endpoint import Responder, answer_http

READ_TIMEOUT: Final = 2.0  # seconds for one worker's answer; a slow one is left out
MAX_BODY: Final = 16 * 1024 * 1024  # bytes read from a worker at most
_FIRST: Final = ("_created",)  # sample name suffixes merged by min
_HIGHEST: Final = ("sipguard_build_info",)  # sample names merged by max


async def read_worker(path: str) -> bytes | None:
    """The exposition text of the worker serving on `path`, or None (gone, slow, not 200)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: worker\r\n\r\n")
            response = await reader.read(MAX_BODY)
            while chunk := await reader.read(MAX_BODY):
                response += chunk
    except (OSError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return body if head.startswith(b"HTTP/1.1 200") else None


def _combine(name: str, old: float, new: float) -> float:
    if name.endswith(_FIRST):
        return min(old, new)
    if name in _HIGHEST:
        return max(old, new)
    return old + new


def _format(value: float) -> str:
    return repr(float(value))


def merge(texts: Sequence[bytes]) -> bytes:
    """Exposition texts of the same program into one: every family once, with its header lines
    and the union of its series, in the order they were first seen."""
    families: dict[str, tuple[list[str], dict[str, float]]] = {}
    current: tuple[list[str], dict[str, float]] | None = None
    for text in texts:
        for line in text.decode("utf-8", "replace").splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split(" ", 3)[2]
                current = families.setdefault(name, ([], {}))
                if line not in current[0]:
                    current[0].append(line)
                continue
            if not line or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            try:
                number = float(value)
            except ValueError:
                continue
            if current is None:  # a sample before any header: a family of its own
                current = families.setdefault("", ([], {}))
            samples = current[1]
            sample_name = series.split("{", 1)[0]
            old = samples.get(series)
            samples[series] = number if old is None else _combine(sample_name, old, number)
    out: list[str] = []
    for headers, samples in families.values():
        out.extend(headers)
        out.extend(f"{series} {_format(value)}" for series, value in samples.items())
    return ("\n".join(out) + "\n").encode("utf-8")


class _Body:
    """A scrape result in the shape `answer_http` serves."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def scrape(self) -> bytes:
        return self.body


class AggregateEndpoint:
    """What the supervisor answers on `metrics.listen`: /metrics merged from every worker
    that answers (plus the supervisor's own lines from `extra`), /healthz."""

    def __init__(self, paths: Callable[[], list[str]], extra: Callable[[], str]) -> None:
        self._paths = paths
        self._extra = extra

    async def scrape(self) -> bytes:
        texts = await asyncio.gather(*(read_worker(path) for path in self._paths()))
        found = [text for text in texts if text is not None]
        return merge([*found, self._extra().encode("utf-8")])

    @property
    def respond(self) -> Responder:
        async def respond(request_line: bytes) -> bytes:
            body = b""
            if b" /metrics" in request_line:
                with contextlib.suppress(OSError):
                    body = await self.scrape()
            return answer_http(_Body(body), request_line)

        return respond
