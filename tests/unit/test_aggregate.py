"""`sipguard.aggregate`: merging the workers' exposition texts, and reading a worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sipguard.aggregate import AggregateEndpoint, merge, read_worker
from sipguard.metrics import Metrics, serve_metrics_unix

A = b"""\
# HELP x_total Things.
# TYPE x_total counter
x_total{kind="a"} 1.0
x_total{kind="b"} 2.0
x_created{kind="a"} 100.0
# HELP sipguard_build_info Always 1.
# TYPE sipguard_build_info gauge
sipguard_build_info{version="0.1.0"} 1.0
# HELP h Latency.
# TYPE h histogram
h_bucket{le="0.1"} 3.0
h_bucket{le="+Inf"} 4.0
h_sum 0.5
h_count 4.0
"""
B = b"""\
# HELP x_total Things.
# TYPE x_total counter
x_total{kind="a"} 10.0
x_total{kind="c"} 5.0
x_created{kind="a"} 90.0
# HELP sipguard_build_info Always 1.
# TYPE sipguard_build_info gauge
sipguard_build_info{version="0.1.0"} 1.0
# HELP h Latency.
# TYPE h histogram
h_bucket{le="0.1"} 1.0
h_bucket{le="+Inf"} 1.0
h_sum 0.25
h_count 1.0
"""


def test_merge_adds_series_and_keeps_families_together() -> None:
    lines = merge([A, B]).decode().splitlines()
    assert lines == [
        "# HELP x_total Things.",
        "# TYPE x_total counter",
        'x_total{kind="a"} 11.0',
        'x_total{kind="b"} 2.0',
        'x_created{kind="a"} 90.0',  # the earliest creation, not a sum
        'x_total{kind="c"} 5.0',  # only in B, still inside its family
        "# HELP sipguard_build_info Always 1.",
        "# TYPE sipguard_build_info gauge",
        'sipguard_build_info{version="0.1.0"} 1.0',  # not 2: it is not a count
        "# HELP h Latency.",
        "# TYPE h histogram",
        'h_bucket{le="0.1"} 4.0',
        'h_bucket{le="+Inf"} 5.0',
        "h_sum 0.75",
        "h_count 5.0",
    ]


def test_merge_of_one_text_is_that_text() -> None:
    assert merge([A]) == A


def test_the_endpoint_reads_and_sums_real_workers(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        first, second = Metrics(trunks=["demo"]), Metrics(trunks=["demo"])
        first.upstream_error()
        second.upstream_error()
        second.upstream_error()
        paths = [str(tmp_path / "m0"), str(tmp_path / "m1")]
        servers = [
            await serve_metrics_unix(m, p) for m, p in zip((first, second), paths, strict=True)
        ]
        try:
            assert await read_worker(str(tmp_path / "nobody")) is None  # gone: left out
            endpoint = AggregateEndpoint(lambda: [*paths, str(tmp_path / "nobody")], lambda: "")
            return await endpoint.respond(b"GET /metrics HTTP/1.1\r\n")
        finally:
            for server in servers:
                server.close()

    response = asyncio.run(scenario())
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b"\nsipguard_upstream_errors_total 3.0\n" in response
