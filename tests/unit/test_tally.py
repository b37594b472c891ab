"""Plain-count families: a scrape shows exactly what prometheus_client's own Counter and
Histogram show after the same operations (`_created` values aside: they are creation times)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.exposition import generate_latest

from sipguard.tally import CounterFamily, Timings

BUCKETS = (5e-6, 1e-5, 2.5e-5, 1e-3, 10.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    """The scrape's lines, with the value of each `_created` sample blanked."""
    lines = generate_latest(registry).decode().splitlines()
    return [
        line.rsplit(" ", 1)[0] if "_created{" in line or "_created " in line else line
        for line in lines
    ]


def test_counter_family_scrapes_like_a_counter() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    family = CounterFamily("x_requests", "Requests.", ["transport", "method"], ours)
    counter = Counter("x_requests", "Requests.", ["transport", "method"], registry=theirs)
    for labels, times in ((("udp", "INVITE"), 3), (("tcp", "BYE"), 0), (("udp", "ACK"), 1)):
        series = family.labels(*labels)
        child = counter.labels(*labels)
        for _ in range(times):
            series.value += 1
            child.inc()
    assert family.labels("udp", "INVITE") is family.labels("udp", "INVITE")
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("x_requests_total", {"transport": "udp", "method": "INVITE"}) == 3
    assert ours.get_sample_value("x_requests_created", {"transport": "tcp", "method": "BYE"})


def test_timings_scrape_like_a_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    timings = Timings("x_seconds", "Time.", BUCKETS, ours)
    histogram = Histogram("x_seconds", "Time.", buckets=BUCKETS, registry=theirs)
    # on a bound, between bounds, below the first, beyond the last
    for amount in (5e-6, 7e-6, 1e-7, 2.5e-5, 3e-4, 11.0, 0.0, 1e-3):
        timings.observe(amount)
        histogram.observe(amount)
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("x_seconds_bucket", {"le": "1e-05"}) == 4
    assert ours.get_sample_value("x_seconds_count") == 8


def test_created_series_follow_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_metrics, "_use_created", False)
    registry = CollectorRegistry()
    CounterFamily("x_requests", "Requests.", ["method"], registry).labels("INVITE").value += 1
    Timings("x_seconds", "Time.", BUCKETS, registry).observe(1e-6)
    assert "_created" not in generate_latest(registry).decode()


def test_names_clash_like_any_collector() -> None:
    registry = CollectorRegistry()
    CounterFamily("x_requests", "Requests.", ["method"], registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("x_requests", "Again.", registry=registry)
