"""Plain counters for the per-message hot path, turned into Prometheus families when scraped.

Owns: `Series` (one labelled count, moved by `series.value += 1`), `CounterFamily` (a counter
family made of them) and `Timings` (a histogram kept as per-bucket counts and a sum). Both
families are prometheus_client custom collectors: registered in a `CollectorRegistry`, they
build their metric family at scrape time with the samples a `prometheus_client.Counter` or
`Histogram` of the same name would expose (`_total` and `_created` per series; `_bucket`,
`_count`, `_sum`, `_created`), in the order the series were created.

Why: prometheus_client's `Counter.inc()` costs five Python calls and a lock, `Histogram.observe`
as many, and every message moved about four series (~15 calls: a third of what the shell added
to each message). sipguard runs one event loop thread, which also answers the scrape, so plain
integers are exact. Kamailio's statistics work the same way: counters bumped in place, read by
whoever asks.

Never does: locking (one thread increments and collects), or create a series on its own: the
owners (`sipguard.decisions`, `sipguard.metrics`) decide which label values exist, from bounded
sets only.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

__all__ = ["CounterFamily", "Series", "Timings"]


def _created_series() -> bool:
    """Whether `_created` samples are exposed: prometheus_client's own switch
    (`disable_created_metrics()`, PROMETHEUS_DISABLE_CREATED_SERIES), so that these families
    follow it like the library's own counters."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


def _le(bound: float) -> str:
    """The `le` label of a bucket, written as prometheus_client writes it ("+Inf", "2.5e-05")."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class Series:
    """One labelled count; `created` is when it came to exist (the `_created` sample)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()


class CounterFamily:
    """A counter family whose series are `Series`: `labels(...)` once (not per message), then
    `series.value += 1` on the hot path."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.series: dict[tuple[str, ...], Series] = {}
        registry.register(self)

    def labels(self, *values: str) -> Series:
        """The series of these label values, created on first use."""
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = Series()
        return series

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        created = _created_series()
        for values, series in list(self.series.items()):
            family.add_metric(values, series.value, series.created if created else None)
        yield family


class Timings:
    """A histogram without labels: `observe` adds one to the bucket of the first upper bound
    not below the amount (as prometheus_client does) and the amount to the sum."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        bounds = sorted(float(bound) for bound in buckets)
        self.bounds = (*bounds, math.inf) if not bounds or bounds[-1] != math.inf else (*bounds,)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()
        registry.register(self)

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        family.add_metric([], buckets, self.sum)
        if _created_series():
            family.add_sample(self.name + "_created", {}, self.created)
        yield family
