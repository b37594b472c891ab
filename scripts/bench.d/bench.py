"""scripts/bench driver: sipguard under SIPp load, from a clone alone.

Owns: the benchmark of the running daemon. For every variant (workers, state backend, or the
Kamailio anchor) it starts an upstream UAS (SIPp, uas.xml), the proxy, and Redis when the variant
needs it, runs SIPp clients against the proxy, and stops everything by PID. Two phases:
  fixed    REGISTER or INVITE calls with digest at a fixed rate: proxy CPU ms per call (utime +
           stime from /proc of the proxy and its descendants, reaped workers included) and the
           proxy / SIPp-client CPU ratio, which the host's speed drift moves far less;
  maxrate  the highest rate with no failed call (and >= 90 % of the offered rate achieved): a
           coarse ramp, then bisection down to --resolution (fine steps).
Repetitions interleave the variants (rep 1 of every variant, then rep 2...) so drift hits them
alike; the summary gives medians and [min..max] ranges, and every variant's figures relative to
the first.

Never does: target anything but loopback; run anything unbounded (every SIPp run has -m,
-timeout and a hard kill; the UAS and the proxy are stopped by PID at the end of each run, also on
Ctrl-C); kill anything it did not start.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCENARIOS = {"register": "uac_register.xml", "invite": "uac_invite.xml"}
SIPP_BUF = 4 * 1024 * 1024
UN_MAX_SOCKETS = 16000  # `-t un`: SIPp refuses a socket cap above its open-file limit (20000 here)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (the proxy listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port pair on 127.0.0.1")


def udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def wait_until(what: str, check: object, deadline_s: float, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready within {deadline_s} s")


def stop(proc: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after grace_s: by PID, only processes this driver started."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        log(f"PID {proc.pid} ignored SIGTERM for {grace_s} s: SIGKILL")
        proc.kill()
        return proc.wait(5)


# ---------------------------------------------------------------- CPU from /proc
def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, own CPU ticks, reaped children's CPU ticks) of a PID, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def tree(root: int) -> list[int]:
    """root and its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(roots: list[int]) -> float:
    """CPU of the roots, their living descendants and the children they reaped (restarted
    workers): utime + stime (+ cutime + cstime of each root)."""
    ticks = 0
    for root in roots:
        for pid in tree(root):
            st = _stat(pid)
            if st is not None:
                ticks += st[1] + (st[2] if pid == root else 0)
    return ticks / CLK_TCK


# ---------------------------------------------------------------- the parts under test
@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    name: str
    kind: str = "sipguard"  # or "kamailio"
    workers: str = "1"
    state: str = "memory"
    upstreams: str = "1"  # 2: a second UAS, both priority 1, with OPTIONS probing (issue 14)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        if spec == "kamailio":
            return cls(name="kamailio", kind="kamailio")
        values = dict(item.split("=", 1) for item in spec.split(",") if item)
        unknown = set(values) - {"workers", "state", "upstreams"}
        if unknown:
            raise SystemExit(f"--variant {spec!r}: unknown key(s) {sorted(unknown)}")
        return cls(
            name=spec,
            workers=values.get("workers", "1"),
            state=values.get("state", "memory"),
            upstreams=values.get("upstreams", "1"),
        )


@dataclasses.dataclass
class Stack:
    """The upstream UAS, the proxy (and Redis) of one variant's run; stopped by PID on exit."""

    variant: Variant
    workdir: Path
    anchor_dir: Path | None
    target_port: int = 0
    uas_port: int = 0
    uas2_port: int = 0
    metrics_port: int = 0
    proxy_pids: list[int] = dataclasses.field(default_factory=list)
    uas: subprocess.Popen[bytes] | None = None
    uas2: subprocess.Popen[bytes] | None = None
    proxy: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None

    def start(self, max_secs: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.variant.kind == "kamailio":
            self.target_port, self.uas_port = 5060, 5070  # fixed in the anchor's kamailio.cfg
        else:
            self.target_port, self.uas_port, self.metrics_port = (
                free_port(),
                free_port(),
                free_port(),
            )
        self.uas = self._start_uas(max_secs, self.uas_port, "uas_errors.log")
        if self.variant.upstreams == "2":
            self.uas2_port = free_port()
            self.uas2 = self._start_uas(max_secs, self.uas2_port, "uas2_errors.log")
        if self.variant.kind == "kamailio":
            self._start_kamailio()
        else:
            self._start_sipguard()

    def _start_uas(self, max_secs: int, port: int, errors: str) -> subprocess.Popen[bytes]:
        cmd = [
            "timeout",
            "-k",
            "5",
            str(max_secs + 30),
            "sipp",
            "-sf",
            str(HERE / "uas.xml"),
            "-i",
            HOST,
            "-p",
            str(port),
            "-t",
            "u1",
            "-nostdin",
            "-buff_size",
            str(SIPP_BUF),
            "-timeout",
            f"{max_secs}s",
            "-trace_err",
            "-error_file",
            str(self.workdir / errors),
        ]
        uas = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until("UAS", lambda: udp_bound(port), 10, uas)
        return uas

    def _start_redis(self) -> str:
        port = free_port()
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit(
                "redis-server is not installed (scripts/bench installs it for state=redis)"
            )
        self.redis = subprocess.Popen(
            [
                exe,
                "--bind",
                HOST,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "redis.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until("redis-server", lambda: _tcp_open(port), 10, self.redis)
        return f"redis://{HOST}:{port}/0"

    def _start_sipguard(self) -> None:
        config = sipguard_config(
            self, self._start_redis() if self.variant.state == "redis" else None
        )
        path = self.workdir / "sipguard.yaml"
        path.write_text(config)
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "sipguard", "run", "--config", str(path)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "sipguard.log").open("wb"),
            stderr=(self.workdir / "sipguard.err").open("wb"),
        )
        wait_until(
            "sipguard", lambda: udp_bound(self.target_port) and self._healthy(), 30, self.proxy
        )
        self.proxy_pids = [self.proxy.pid]

    def _healthy(self) -> bool:
        with contextlib.suppress(OSError):
            url = f"http://{HOST}:{self.metrics_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        return False

    def _start_kamailio(self) -> None:
        assert self.anchor_dir is not None
        out = subprocess.run(
            [str(self.anchor_dir / "start_kamailio.sh")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.proxy_pids = [int(out.stdout.split()[-1])]

    def stop(self) -> None:
        if self.variant.kind == "kamailio" and self.proxy_pids:
            assert self.anchor_dir is not None
            subprocess.run(
                [str(self.anchor_dir / "stop_kamailio.sh")],
                timeout=30,
                check=False,
                stdout=subprocess.DEVNULL,
            )
        rc = stop(self.proxy, 20)
        if self.proxy is not None and rc not in (0, None):
            log(f"note: sipguard exited {rc}; see {self.workdir}")
        stop(self.uas)
        stop(self.uas2)
        stop(self.redis)
        self.proxy_pids = []


def _tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def sipguard_config(stack: Stack, redis_url: str | None) -> str:
    """The daemon's config: alice / s3cret in realm sipguard.test, 127.0.0.1 whitelisted and
    never banned nor rate limited (the load generator is one source), logging at warning (one
    line per decision would be measured too), metrics on (counting is part of the figure)."""
    lines = [
        "listen:",
        f"  - udp://{HOST}:{stack.target_port}",
        f"  - tcp://{HOST}:{stack.target_port}",
        "upstream:",
        f"  - sip:{HOST}:{stack.uas_port};transport=udp",
        *([f"  - sip:{HOST}:{stack.uas2_port};transport=udp"] if stack.uas2_port else []),
        "auth:",
        "  realm: sipguard.test",
        "  algorithms: [MD5]",
        "  nonce_ttl: 300",
        "trunks:",
        "  - name: bench",
        "    whitelist: [127.0.0.1]",
        "    credentials:",
        "      - username: alice",
        "        password: s3cret",
        "metrics:",
        f"  listen: {HOST}:{stack.metrics_port}",
        "log:",
        "  level: warning",
        "  format: json",
        "protection:",
        "  never_ban: [127.0.0.1]",
    ]
    if stack.variant.workers != "1":
        lines.append(f"workers: {stack.variant.workers}")
    if redis_url is not None:
        lines += ["state:", "  backend: redis", f"  redis_url: {redis_url}"]
    if stack.uas2_port:
        lines += ["upstream_health:", "  probe_interval: 5"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- one SIPp client run
@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    variant: str
    phase: str
    scenario: str
    rep: int
    rate: int
    calls: int
    ok: int
    failed: int
    retrans: int
    achieved: float
    wall_s: float
    proxy_cpu_s: float
    uac_cpu_s: float

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.ok == self.calls and self.achieved >= 0.9 * self.rate

    @property
    def ms_per_call(self) -> float:
        return 1000 * self.proxy_cpu_s / self.ok if self.ok else float("nan")

    @property
    def ratio(self) -> float:
        return self.proxy_cpu_s / self.uac_cpu_s if self.uac_cpu_s > 0 else float("nan")


def run_uac(
    stack: Stack,
    args: argparse.Namespace,
    phase: str,
    scenario: str,
    rep: int,
    rate: int,
    secs: float,
) -> Step:
    calls = max(1, int(rate * secs))
    run_dir = stack.workdir / f"{phase}-{scenario}-rep{rep}-r{rate}-{time.monotonic_ns()}"
    run_dir.mkdir(parents=True)
    remote = f"{HOST}:{stack.target_port}"
    soft = int(secs * 3 + 15)
    cmd = [
        "timeout",
        "-k",
        "3",
        str(soft + 10),
        "sipp",
        remote,
        "-sf",
        str(HERE / SCENARIOS[scenario]),
        "-i",
        HOST,
        "-p",
        str(free_port()),
        "-t",
        args.transport,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        str(max(200, rate * 5)),
        "-d",
        str(args.pause_ms),
        "-au",
        "alice",
        "-ap",
        "s3cret",
        "-s",
        "service",
        "-nostdin",
        "-buff_size",
        str(SIPP_BUF),
        "-recv_timeout",
        "5000",
        "-max_retrans",
        "3",
        "-timeout",
        f"{soft}s",
        "-timeout_error",
        "-trace_stat",
        "-stf",
        str(run_dir / "stat.csv"),
        "-fd",
        "3600",
        "-trace_err",
        "-error_file",
        str(run_dir / "errors.log"),
    ]
    if args.transport == "un":  # a socket per call: its cap must fit SIPp's fd limit
        cmd += ["-max_socket", str(UN_MAX_SOCKETS)]
    if scenario == "invite":
        cmd += ["-auth_uri", f"service@{remote}"]  # digest uri = Request-URI (RFC 2617 §3.2.2.5)
    cpu0 = cpu_seconds(stack.proxy_pids)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=run_dir,
        stdin=subprocess.DEVNULL,
        stdout=(run_dir / "screen.txt").open("wb"),
        stderr=subprocess.STDOUT,
    )
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    wall = time.monotonic() - start
    cpu1 = cpu_seconds(stack.proxy_pids)
    stats = last_stats(run_dir / "stat.csv")
    ok, failed = _int(stats.get("SuccessfulCall(C)")), _int(stats.get("FailedCall(C)"))
    out, cps = _int(stats.get("OutgoingCall(C)")), _float(stats.get("CallRate(C)"))
    elapsed = out / cps if cps > 0 else wall
    step = Step(
        stack.variant.name,
        phase,
        scenario,
        rep,
        rate,
        calls,
        ok,
        max(failed, calls - ok),
        _int(stats.get("Retransmissions(C)")),
        ok / elapsed if elapsed > 0 else 0.0,
        wall,
        cpu1 - cpu0,
        usage.ru_utime + usage.ru_stime,
    )
    log(
        f"  {step.variant:<24} {phase:<7} {scenario:<8} rep{rep} rate={rate:<5} ok={ok:<6} "
        f"failed={step.failed:<4} retrans={step.retrans:<4} achieved={step.achieved:7.1f}/s "
        f"proxy={step.proxy_cpu_s:6.2f}s ({step.ms_per_call:.4f} ms/call) "
        f"uac={step.uac_cpu_s:5.2f}s {'PASS' if step.passed else 'FAIL'}"
    )
    time.sleep(args.cooldown)  # the UAS's 500 ms timewait drains before the next step
    return step


def last_stats(path: Path) -> dict[str, str]:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if len(lines) >= 2:
            return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
    return {}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


# ---------------------------------------------------------------- phases
def fixed(stack: Stack, args: argparse.Namespace, scenario: str, rep: int) -> list[Step]:
    return [run_uac(stack, args, "fixed", scenario, rep, args.fixed_rate, args.fixed_secs)]


def maxrate(
    stack: Stack, args: argparse.Namespace, scenario: str, rep: int
) -> tuple[int, list[Step]]:
    """Coarse ramp (x ramp_factor) until a step fails, then bisect between the last pass and the
    first failure until they are within --resolution of each other. A failing step is retried
    --confirm times (noise guard): it fails only if every try fails."""
    steps: list[Step] = []

    def passes(rate: int) -> bool:
        for _ in range(1 + args.confirm):
            steps.append(run_uac(stack, args, "maxrate", scenario, rep, rate, args.step_secs))
            if steps[-1].passed:
                return True
        return False

    best, fail, rate = 0, 0, args.ramp_start
    while rate <= args.ramp_max:
        if not passes(rate):
            fail = rate
            break
        best, rate = rate, int(rate * args.ramp_factor)
    while fail and fail - best > max(args.resolution * max(best, 1), 10):
        mid = (best + fail) // 2
        if passes(mid):
            best = mid
        else:
            fail = mid
    log(
        f"  => {stack.variant.name} {scenario} rep{rep}: highest rate with no failed call "
        f"{best}/s (first failing {fail or 'none'})"
    )
    return best, steps


# ---------------------------------------------------------------- summary
def med_range(values: list[float], fmt: str = "{:.4f}") -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "NA"
    mid, low, high = (fmt.format(x) for x in (statistics.median(values), min(values), max(values)))
    return f"{mid} [{low}..{high}]"


def summary(
    variants: list[Variant],
    steps: list[Step],
    best: dict[tuple[str, str], list[int]],
    args: argparse.Namespace,
) -> str:
    lines = [
        f"# scripts/bench {' '.join(sys.argv[1:])}",
        f"# {os.uname().sysname} {os.uname().release}, {os.cpu_count()} CPUs; median [min..max] "
        f"over {args.reps} rep(s); load avg at the end {Path('/proc/loadavg').read_text()[:14]}",
    ]
    base = variants[0].name
    for scenario in args.scenarios:
        lines.append(f"\n## {scenario} with digest")
        for v in variants:
            fx = [
                s
                for s in steps
                if s.variant == v.name and s.scenario == scenario and s.phase == "fixed"
            ]
            if fx:
                lines.append(
                    f"{v.name:<26} fixed {args.fixed_rate}/s x {args.fixed_secs:g} s: proxy CPU "
                    f"{med_range([s.ms_per_call for s in fx])} ms/call, proxy/UAC CPU "
                    f"{med_range([s.ratio for s in fx], '{:.3f}')}, failed "
                    f"{sum(s.failed for s in fx)} of {sum(s.calls for s in fx)}"
                )
            if (v.name, scenario) in best:
                rates = [float(r) for r in best[v.name, scenario]]
                lines.append(
                    f"{v.name:<26} max rate with no failed call: {med_range(rates, '{:.0f}')}/s"
                )
        for v in variants[1:]:
            lines.extend(_relative(v.name, base, scenario, steps, best))
    return "\n".join(lines) + "\n"


def _relative(
    name: str, base: str, scenario: str, steps: list[Step], best: dict[tuple[str, str], list[int]]
) -> Iterator[str]:
    def fixed_of(n: str, attr: str) -> float:
        vals = [
            getattr(s, attr)
            for s in steps
            if s.variant == n and s.scenario == scenario and s.phase == "fixed"
        ]
        return statistics.median(vals) if vals else float("nan")

    for attr, label in (("ms_per_call", "CPU per call"), ("ratio", "proxy/UAC CPU ratio")):
        b = fixed_of(base, attr)
        if not math.isnan(b) and b > 0:
            yield f"  {name} / {base}: {label} x{fixed_of(name, attr) / b:.2f}"
    if (name, scenario) in best and (base, scenario) in best:
        b = statistics.median(best[base, scenario])
        if b > 0:
            yield f"  {name} / {base}: max rate x{statistics.median(best[name, scenario]) / b:.2f}"


# ---------------------------------------------------------------- main
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="SPEC",
        help="workers=N,state=memory|redis (repeatable; default workers=1,state=memory)",
    )
    p.add_argument("--workers", help="shorthand for one variant with workers=N")
    p.add_argument("--state", choices=["memory", "redis"], help="shorthand: state backend")
    p.add_argument(
        "--anchor",
        action="store_true",
        help="also measure Kamailio (../shared/bench or $SIPGUARD_BENCH_DIR) the same way",
    )
    p.add_argument("--phases", default="fixed,maxrate", help="fixed,maxrate")
    p.add_argument("--scenarios", default="register,invite", help="register,invite")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--fixed-rate", type=int, default=500)
    p.add_argument("--fixed-secs", type=float, default=10)
    p.add_argument("--ramp-start", type=int, default=500)
    p.add_argument("--ramp-factor", type=float, default=1.5)
    p.add_argument("--ramp-max", type=int, default=20000)
    p.add_argument(
        "--resolution", type=float, default=0.05, help="bisect until within this fraction"
    )
    p.add_argument("--step-secs", type=float, default=5)
    p.add_argument("--confirm", type=int, default=1, help="retries of a failing max-rate step")
    p.add_argument("--cooldown", type=float, default=1.0)
    p.add_argument("--pause-ms", type=int, default=100, help="ACK to BYE in the INVITE call")
    p.add_argument(
        "--transport",
        choices=["u1", "un", "t1"],
        default="u1",
        help="SIPp's: un = a UDP source port per call (what spreads calls over workers)",
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--quick", action="store_true", help="1 rep, 4 s runs, coarse ramp (~2 min)")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.fixed_secs, args.step_secs, args.confirm = 1, 4, 3, 0
        args.ramp_factor, args.resolution, args.cooldown = 2.0, 0.25, 0.5
    args.phases = [x for x in args.phases.split(",") if x]
    args.scenarios = [x for x in args.scenarios.split(",") if x]
    if not args.variant:
        spec = f"workers={args.workers or 1},state={args.state or 'memory'}"
        args.variant = [spec]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    variants = [Variant.parse(v) for v in args.variant]
    anchor_dir = None
    if args.anchor:
        anchor_dir = Path(os.environ.get("SIPGUARD_BENCH_DIR", ROOT.parent / "shared" / "bench"))
        if not (anchor_dir / "start_kamailio.sh").exists():
            raise SystemExit(
                f"--anchor: no Kamailio harness at {anchor_dir} (set SIPGUARD_BENCH_DIR)"
            )
        variants.insert(0, Variant.parse("kamailio"))
    out = args.out or Path(os.environ.get("TMPDIR", "/tmp")) / "sipguard-bench" / time.strftime(
        "%Y%m%d-%H%M%S"
    )
    out.mkdir(parents=True, exist_ok=True)
    log(f"results in {out}; variants: {', '.join(v.name for v in variants)}")
    steps: list[Step] = []
    best: dict[tuple[str, str], list[int]] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    budget = int(args.fixed_secs * 3 + 60 + len(args.scenarios) * 40 * args.step_secs * 3)
    for rep in range(1, args.reps + 1):
        for variant in variants:
            stack = Stack(
                variant,
                out / f"{variant.name.replace(',', '_').replace('=', '')}-rep{rep}",
                anchor_dir,
            )
            try:
                stack.start(budget)
                log(
                    f"{variant.name} rep{rep}: proxy PIDs {tree(stack.proxy_pids[0])} on "
                    f"{HOST}:{stack.target_port}"
                )
                for scenario in args.scenarios:
                    if "fixed" in args.phases:
                        steps += fixed(stack, args, scenario, rep)
                    if "maxrate" in args.phases:
                        rate, ramp = maxrate(stack, args, scenario, rep)
                        steps += ramp
                        best.setdefault((variant.name, scenario), []).append(rate)
            finally:
                stack.stop()
    (out / "steps.json").write_text(
        json.dumps([dataclasses.asdict(s) | {"passed": s.passed} for s in steps], indent=1)
    )
    text = summary(variants, steps, best, args)
    (out / "summary.txt").write_text(text)
    print("\n" + text)
    log(f"results: {out}")
    failed_fixed = sum(s.failed for s in steps if s.phase == "fixed")
    return 1 if failed_fixed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
