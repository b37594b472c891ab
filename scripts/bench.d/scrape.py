"""The cost of one /metrics scrape with `workers: N` (issue 15): wall time per scrape.

Owns: starting sipguard on free loopback ports with the given worker counts (one after the
other), sending a little SIP traffic first so that the series exist (OPTIONS from many source
ports: every worker gets some), timing --scrapes sequential GET /metrics, and printing the
median, min and max per count. Run as `.venv/bin/python scripts/bench.d/scrape.py 1 4`.

Never does: target anything but loopback, run unbounded (every wait has a deadline), or kill a
process it did not start (the daemon is stopped by its PID).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind((HOST, 0))
        port = int(tcp.getsockname()[1])
        udp.bind((HOST, port))
        return port


def config(port: int, metrics: int, upstream: int, workers: int) -> str:
    return (
        f"listen: [udp://{HOST}:{port}]\n"
        f"upstream: ['sip:{HOST}:{upstream};transport=udp']\n"
        "auth: {realm: sipguard.test, algorithms: [MD5]}\n"
        "trunks: [{name: bench, whitelist: [127.0.0.1],"
        " credentials: [{username: alice, password: s3cret}]}]\n"
        f"metrics: {{listen: '{HOST}:{metrics}'}}\n"
        "log: {level: warning, format: json}\n"
        f"workers: {workers}\n"
    )


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return bytes(answer.read())


def traffic(port: int, count: int) -> None:
    """OPTIONS from `count` source ports (answered by the daemon or forwarded: either way the
    request and decision series exist in whichever worker got it)."""
    for i in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            local = sock.getsockname()[1]
            message = (
                f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bKscrape{i}\r\n"
                f"From: <sip:alice@sipguard.test>;tag=s{i}\r\nTo: <sip:{HOST}>\r\n"
                f"Call-ID: scrape-{i}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.sendto(message.encode(), (HOST, port))


def measure(workers: int, scrapes: int, workdir: Path) -> list[float]:
    port, metrics, upstream = free_port(), free_port(), free_port()
    path = workdir / f"workers{workers}.yaml"
    path.write_text(config(port, metrics, upstream, workers))
    path.chmod(0o600)
    log = (workdir / f"workers{workers}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipguard", "run", "--config", str(path)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://{HOST}:{metrics}/metrics"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                get(f"http://{HOST}:{metrics}/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"sipguard did not come up; see {log.name}") from None
                time.sleep(0.2)  # polling a deadline-bounded start, not synchronising
        traffic(port, 200)
        get(url)
        times = []
        for _ in range(scrapes):
            start = time.perf_counter()
            body = get(url)
            times.append(time.perf_counter() - start)
        lines = body.count(b"\n")
        print(f"workers={workers}: {len(body)} bytes, {lines} lines", flush=True)
        return times
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workers", nargs="+", type=int)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sipguard-scrape-") as workdir:
        for count in args.workers:
            times = sorted(measure(count, args.scrapes, Path(workdir)))
            print(
                f"workers={count}: scrape median {statistics.median(times) * 1e3:.1f} ms "
                f"[{times[0] * 1e3:.1f}..{times[-1] * 1e3:.1f}] over {len(times)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
