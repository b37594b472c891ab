"""Acceptance tests of issue 7 ("Protect the edge") against the real daemon on loopback.

Owns: the daemon-level proof of SECURITY-CASES 6 (TCP slow-loris), 8 (no reply amplification),
9 (connection exhaustion: per-source cap, idle timeout, half-open TLS), 26 (same refusal for
existing and unknown users), 33 (a bounded flood: RSS stays under a ceiling, a legitimate client
still registers), and the `protection:` settings: per-source rate limit with 503 + Retry-After
or silence, bans that expire and are logged (`banned`, then `unbanned`). Also the raw-socket
helpers that the sipvicious tests (test_attack_tools.py) share: a UDP peer bound to any
127.x.y.z source, a wrong-password exchange, a /metrics scrape.

Must never: target anything but loopback; synchronise with a fixed sleep (every wait polls a
condition against a deadline; only the paced senders sleep between sends); send unbounded
traffic (every loop is bounded in count and time); leave a process behind (the daemon and SIPp
are stopped by PID in the fixtures' teardown).

RFC 3261: §22.2 (401 challenge, digest answer), §21.5.4 (503 + Retry-After, §20.33), §18.3
(stream framing: a message arrives whole or the connection goes), §17.1.2.2 (Timer E: a UDP
client retransmits, which the flood's legitimate client does), §8.1.3.1 / §18.2.2 (replies go
to the socket peer, so a spoofable source must never get more bytes than it sent).
"""

from __future__ import annotations

import contextlib
import secrets
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CORPORA
from tests.integration.conftest import DaemonFactory
from tests.integration.harness import (
    PASSWORD,
    USER,
    V4,
    Daemon,
    Sipp,
    SippServer,
    TlsFiles,
    demo_config,
    free_port,
)
from tests.polling import wait_for
from tests.sipclient import (
    SipClient,
    SipMessage,
    answer_challenge,
    build_request,
    parse_message,
    pick_challenge,
)

pytest.importorskip("sipguard.server", reason="the daemon (sipguard/server.py) is not there yet")

pytestmark = [pytest.mark.integration, pytest.mark.attack]

# Extra loopback sources (the whole 127/8 is on lo on Linux): each test's attacker gets its own
# address so that bans, rate limits and connection counts never leak into the legitimate client
# on 127.0.0.1.
ATTACKER = "127.0.0.2"
FLOODER = "127.0.0.3"
LORIS = "127.0.0.4"
HOARDER = "127.0.0.5"
HALF_OPEN = "127.0.0.6"
STRANGER = "127.0.0.7"
EVERYONE = "127.0.0.0/8"  # the trunk's whitelist when attackers must be challenged, not refused


# --------------------------------------------------------------------------- the stack


@dataclass
class Edge:
    """sipguard on udp+tcp 127.0.0.1:port (and tls when asked) in front of one SIPp UAS."""

    daemon: Daemon
    uas: SippServer
    port: int
    metrics_port: int | None = None
    tls_port: int | None = None

    @property
    def target(self) -> tuple[str, int]:
        return (V4, self.port)

    @property
    def uri(self) -> str:
        """The Request-URI of a REGISTER (and of an OPTIONS ping to sipguard itself)."""
        return f"sip:{V4}:{self.port}"

    def events(self, name: str, **fields: object) -> list[dict[str, Any]]:
        return [
            e
            for e in self.daemon.logs()
            if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]

    def metrics(self) -> dict[str, float]:
        assert self.metrics_port is not None, "start the edge with metrics=True"
        return scrape(self.metrics_port)


EdgeFactory = Callable[..., Edge]


@pytest.fixture
def edge_factory(
    sipp: Sipp, daemon_factory: DaemonFactory, request: pytest.FixtureRequest
) -> Iterator[EdgeFactory]:
    def make(
        *,
        whitelist: tuple[str, ...] = (EVERYONE,),
        protection: Mapping[str, Any] | None = None,
        limits: Mapping[str, Any] | None = None,
        tls: bool = False,
        metrics: bool = False,
    ) -> Edge:
        uas = sipp.start_uas("uas.xml", V4)
        port = free_port("both", V4)
        listen = [f"udp://{V4}:{port}", f"tcp://{V4}:{port}"]
        tls_files: TlsFiles | None = None
        tls_port = None
        if tls:
            tls_files = request.getfixturevalue("tls_files")
            tls_port = free_port("tcp", V4)
            listen.append(f"tls://{V4}:{tls_port}")
        metrics_port = free_port("tcp", V4) if metrics else None
        extra: dict[str, Any] = {"limits": {"shutdown_grace": 1.0, **(limits or {})}}
        if protection is not None:
            extra["protection"] = dict(protection)
        config = demo_config(
            listen=listen,
            upstream=[f"sip:{V4}:{uas.port};transport=udp"],
            tls=tls_files,
            whitelist=whitelist,
            metrics_port=metrics_port,
            extra=extra,
        )
        return Edge(daemon_factory(config), uas, port, metrics_port, tls_port)

    yield make


# --------------------------------------------------------------------------- raw peers


def scrape(metrics_port: int) -> dict[str, float]:
    """Every sample of /metrics by `name{label="v",...}` (labels sorted), parsed with the
    Prometheus text parser (DESIGN §6)."""
    url = f"http://{V4}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def new_branch() -> str:
    return f"z9hG4bK{secrets.token_hex(8)}"  # RFC 3261 §8.1.1.7 magic cookie


@dataclass
class UdpPeer:
    """A raw UDP socket bound to `source` (any 127.x.y.z), talking to the daemon at `target`.

    tests/sipclient.py binds 127.0.0.1; attacks need other sources, and byte-level control of
    what is sent, so this builds requests with its `build_request` and answers challenges with
    its `answer_challenge` (an implementation independent of sipguard's codec)."""

    source: str
    target: tuple[str, int]
    sock: socket.socket = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.source, 0))

    @property
    def local(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(
        self,
        method: str = "REGISTER",
        *,
        user: str = USER,
        uri: str | None = None,
        call_id: str | None = None,
        from_tag: str = "f1",
        cseq: int = 1,
        branch: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        host, port = self.target
        aor = f"sip:{user}@{host}"
        return build_request(
            method,
            uri or f"sip:{host}:{port}",
            transport="udp",
            local=self.local,
            from_uri=aor,
            from_tag=from_tag,
            to_uri=aor,
            call_id=call_id or f"{secrets.token_hex(8)}@attack",
            cseq=cseq,
            branch=branch or new_branch(),
            contact=f"sip:{user}@{self.local[0]}:{self.local[1]}",
            headers=headers,
        )

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def receive(self, timeout: float) -> bytes | None:
        """The next datagram, or None when `timeout` passes without one."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        return self.sock.recv(65535)

    def transact(self, data: bytes, timeout: float = 3.0) -> SipMessage | None:
        """Send one request; its final response (matched by the top Via branch), or None."""
        branch = parse_message(data).branch
        self.send(data)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            raw = self.receive(left)
            if raw is None:
                return None
            reply = parse_message(raw)
            if reply.is_response and reply.branch == branch and reply.status >= 200:
                return reply
        return None

    def register(
        self, password: str, *, user: str = USER, timeout: float = 3.0
    ) -> tuple[SipMessage | None, SipMessage | None]:
        """REGISTER, then answer the 401 with `password` on the same Call-ID (RFC 3261 §22.2).
        Returns (the challenge, the final answer); either is None when nothing came back."""
        call_id = f"{secrets.token_hex(8)}@attack"
        uri = f"sip:{self.target[0]}:{self.target[1]}"
        challenge = self.transact(self.build(user=user, call_id=call_id, cseq=1), timeout)
        if challenge is None or challenge.status != 401:
            return challenge, None
        header, params = pick_challenge(challenge, "MD5")
        answer = answer_challenge(params, "REGISTER", uri, user, password)
        second = self.build(user=user, call_id=call_id, cseq=2, headers=((header, answer),))
        return challenge, self.transact(second, timeout)

    def ping_collect(self, timeout: float = 5.0) -> tuple[SipMessage, list[SipMessage]]:
        """Ping (see `ping`) and return its 200 with every other message that arrived before
        it: the answers to what was sent earlier, all handled by then."""
        ping = self.build("OPTIONS", uri=f"sip:{self.target[0]}:{self.target[1]}")
        branch = parse_message(ping).branch
        self.send(ping)
        others: list[SipMessage] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            raw = self.receive(left)
            if raw is None:
                break
            message = parse_message(raw)
            if message.is_response and message.branch == branch:
                return message, others
            others.append(message)
        raise TimeoutError(f"no answer to the ping within {timeout}s; got {len(others)} others")

    def ping(self, timeout: float = 3.0) -> SipMessage | None:
        """OPTIONS to sipguard itself: answered 200 for a whitelisted, unbanned source without
        a challenge or a token (core: keep-alive ping). Replies are sent in the order the
        datagrams were handled, so its 200 also proves that everything sent before was handled."""
        host, port = self.target
        return self.transact(self.build("OPTIONS", uri=f"sip:{host}:{port}"), timeout)


def get_banned(edge: Edge, source: str, failures: int = 5) -> None:
    """Make `source` fail digest `failures` times (wrong password: 403 each), then wait for the
    daemon's `banned` event naming it (logged by the core's tick, about once a second)."""
    with UdpPeer(source, edge.target) as peer:
        for attempt in range(failures):
            challenge, answer = peer.register("not-the-password")
            assert challenge is not None, f"no challenge on attempt {attempt}"
            assert answer is not None, f"no answer on attempt {attempt}"
            assert answer.status == 403, answer.start_line
        # Banned now: the next request is dropped before it is parsed.
        assert peer.transact(peer.build(), timeout=1.0) is None
    edge.daemon.wait_event("banned", timeout=5.0, src_ip=source)


def vm_rss_kb(pid: int) -> int:
    """VmRSS of a process in kB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def is_closed(sock: socket.socket) -> bool:
    """True once the peer closed or reset the connection (never blocks; data is discarded).
    select() first: on a socket with a timeout, recv(MSG_DONTWAIT) would still wait."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, ConnectionAbortedError):
        return True
    return data == b""


# --------------------------------------------------------------------------- SECURITY-CASES 26


def test_register_refusals_identical_for_existing_and_unknown_user(
    edge_factory: EdgeFactory,
) -> None:
    """Same status, same headers, same bytes apart from tag and nonce: no user enumeration."""
    edge = edge_factory()
    assert_no_user_oracle(edge, ATTACKER)


def assert_no_user_oracle(edge: Edge, source: str) -> None:
    """From `source`: a REGISTER for alice and one for an unknown user get the same 401 (apart
    from the user echoed in To/From, the To-tag and the fresh nonce); wrong answers as alice and
    as an unknown user get the same 403 apart from the To-tag. Costs two failures (< 5)."""
    unknown = "nobody-here"
    with UdpPeer(source, edge.target) as peer:
        # The same request twice except the user: the challenge must not depend on it.
        challenges = []
        for user in (USER, unknown):
            reply = peer.transact(peer.build(user=user, call_id="enum-1", branch="z9hG4bKenum1"))
            assert reply is not None
            challenges.append(reply)
        assert challenges[0].status == challenges[1].status == 401
        assert _mask(challenges[0], (USER, unknown)) == _mask(challenges[1], (USER, unknown))

        # Wrong answers: same To/From/Call-ID/branch, only the digest username differs.
        refusals = []
        for digest_user in (USER, unknown):
            first = peer.transact(peer.build(call_id="enum-2", branch="z9hG4bKenum2"))
            assert first is not None and first.status == 401
            header, params = pick_challenge(first, "MD5")
            value = answer_challenge(params, "REGISTER", edge.uri, digest_user, "wrong", cnonce="c")
            request = peer.build(
                call_id="enum-2", cseq=2, branch="z9hG4bKenum3", headers=((header, value),)
            )
            reply = peer.transact(request)
            assert reply is not None
            refusals.append(reply)
        assert refusals[0].status == refusals[1].status == 403
        assert [n for n, _ in refusals[0].headers] == [n for n, _ in refusals[1].headers]
        assert _mask(refusals[0]) == _mask(refusals[1])
    failed = edge.events("auth_failed", src_ip=source)
    assert sorted(e["detail"] for e in failed) == ["unknown user", "wrong password"]


def _mask(message: SipMessage, users: tuple[str, ...] = ()) -> bytes:
    """The reply's bytes with the To-tag, the nonce (fresh per challenge) and `users` blanked."""
    out = []
    for name, raw in message.headers:
        value = raw
        if name.lower() in ("to", "t"):
            value = value.split(";tag=")[0]
        if name.lower() == "www-authenticate":
            value = ",".join(
                "nonce=?" if p.strip().startswith("nonce=") else p for p in value.split(",")
            )
        for user in users:
            value = value.replace(user, "USER")
        out.append(f"{name}: {value}")
    return (message.start_line + "\r\n" + "\r\n".join(out)).encode()


# --------------------------------------------------------------------------- SECURITY-CASES 33


FLOOD_MESSAGES = 20_000
FLOOD_SOCKETS = 50
FLOOD_SECONDS = 10.0  # paced: 2000 datagrams/s
FLOOD_HARD_STOP = 14.0  # never longer than this, whatever the pacing achieved
# Ceiling on the daemon's RSS growth during the flood. Measured on this 2-core machine: baseline
# ~40 MB (VmRSS after one registration), peak during the flood +0.2 MB, after +0.2 MB: the
# per-source tables hold one entry for 127.0.0.3, nonces are stateless, nothing per packet is
# kept. 40 MB above the baseline leaves room for allocator noise and log buffers on a slow
# machine while still catching any per-request state (20 000 requests x 2 kB = 40 MB).
RSS_GROWTH_CEILING_KB = 40 * 1024


@dataclass
class FloodStats:
    sent: int = 0
    replies: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    rss_kb: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / max(self.finished - self.started, 1e-6)


def _flood(target: tuple[str, int], pid: int, stats: FloodStats, stop: threading.Event) -> None:
    """Paced sender: FLOOD_MESSAGES unauthenticated REGISTERs from FLOOD_SOCKETS ports on
    FLOODER, each with its own Call-ID, in ticks of 10 ms; replies are drained and counted by
    status; RSS is sampled every tick. Bounded by count and by FLOOD_HARD_STOP."""
    socks = []
    try:
        for _ in range(FLOOD_SOCKETS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((FLOODER, 0))
            sock.setblocking(False)
            socks.append(sock)
        host, port = target
        template = (
            f"REGISTER sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {FLOODER}:{{port}};branch=z9hG4bKfl{{n}};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood{{n}}@{host}>;tag=fl{{n}}\r\n"
            f"To: <sip:flood{{n}}@{host}>\r\n"
            "Call-ID: flood-{n}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:flood@{FLOODER}:{{port}}>\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        ports = [s.getsockname()[1] for s in socks]
        # Built before the clock starts, and only the sockets with replies read: the sender's
        # own cost per datagram can keep it from its pace on a loaded machine (cProfile, 20 000
        # datagrams against a loopback responder: 11.7 calls per datagram, 3.5 of them recv,
        # all on the clock; now 8.3 on the clock, 2.0 of them recv).
        datagrams = [
            template.format(port=ports[n % FLOOD_SOCKETS], n=n).encode()
            for n in range(FLOOD_MESSAGES)
        ]
        tick = 0.01
        per_tick = int(FLOOD_MESSAGES * tick / FLOOD_SECONDS)
        stats.started = time.monotonic()
        hard_stop = stats.started + FLOOD_HARD_STOP
        next_tick = stats.started
        while stats.sent < FLOOD_MESSAGES and time.monotonic() < hard_stop and not stop.is_set():
            for n in range(stats.sent, min(stats.sent + per_tick, FLOOD_MESSAGES)):
                with contextlib.suppress(BlockingIOError):  # a full buffer loses it, as a flood
                    socks[n % FLOOD_SOCKETS].sendto(datagrams[n], target)
                stats.sent += 1
            readable, _, _ = select.select(socks, [], [], 0)
            for sock in readable:
                while True:
                    try:
                        reply = sock.recv(65535)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    status = reply[8:11].decode("ascii", "replace")
                    stats.replies[status] = stats.replies.get(status, 0) + 1
            if stats.sent % 2000 < per_tick:
                stats.rss_kb.append(vm_rss_kb(pid))
            next_tick += tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing of the sender, not a synchronisation
        stats.finished = time.monotonic()
    finally:
        for sock in socks:
            sock.close()


def test_case_33_flood(edge_factory: EdgeFactory) -> None:
    """20 000 unauthenticated REGISTERs from 50 ports of 127.0.0.3 in ~10 s; alice on 127.0.0.1
    registers meanwhile; RSS stays under baseline + 40 MB; the daemon still answers after.

    The trunk is open to any address and has credentials, so every flood REGISTER takes the
    costly path: parse, whitelist, rate limiter, and a signed nonce in a 401 until the source's
    token bucket (burst 400, 50/s) is empty, then a 503. A source a trunk's whitelist names is
    that trunk's to limit, not the anonymous bucket's (issue 12 item 6); a stranger to every
    trunk would get the cheaper 403 path."""
    edge = edge_factory(whitelist=())
    pid = edge.daemon.pid
    with SipClient(*edge.target, "udp", timeout=2.0) as warm:
        assert warm.request_with_auth("REGISTER", edge.uri, USER, PASSWORD, "MD5").status == 200
    baseline = vm_rss_kb(pid)
    stats = FloodStats()
    stop = threading.Event()
    flooder = threading.Thread(target=_flood, args=(edge.target, pid, stats, stop), daemon=True)
    flooder.start()
    registered = attempts = timeouts = 0
    try:
        wait_for(lambda: stats.sent >= 2000, 5.0, "the flood to get going")
        # A phone retransmits over UDP (Timer E); this client registers afresh instead, with a
        # 2 s timeout per transaction, every 0.5 s while the flood runs.
        next_attempt = time.monotonic()
        while flooder.is_alive() and attempts < 40:
            delay = next_attempt - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing of the legitimate client, not a synchronisation
            next_attempt += 0.5
            attempts += 1
            with SipClient(*edge.target, "udp", timeout=2.0) as client:
                try:
                    reply = client.request_with_auth("REGISTER", edge.uri, USER, PASSWORD, "MD5")
                except TimeoutError:
                    timeouts += 1
                    continue
                if reply.status == 200 and flooder.is_alive():
                    registered += 1
        flooder.join(FLOOD_HARD_STOP + 5)
    finally:
        stop.set()
        flooder.join(FLOOD_HARD_STOP + 5)
    assert not flooder.is_alive()
    during_peak = max(stats.rss_kb, default=baseline)
    after = vm_rss_kb(pid)
    print(
        f"\nflood: sent {stats.sent} in {stats.finished - stats.started:.1f}s "
        f"({stats.rate:.0f}/s), replies {stats.replies}; legit {registered}/{attempts} "
        f"registered during it ({timeouts} timed out); "
        f"RSS kB baseline {baseline} peak {during_peak} after {after}"
    )
    assert stats.sent >= FLOOD_MESSAGES * 0.9, "the sender fell far behind its pacing"
    assert registered >= 1, f"alice never registered during the flood ({attempts} attempts)"
    assert edge.daemon.alive(), edge.daemon.describe()
    assert during_peak - baseline < RSS_GROWTH_CEILING_KB, stats.rss_kb
    assert after - baseline < RSS_GROWTH_CEILING_KB
    # The limiter worked: most of the flood got 503, not a fresh nonce.
    assert stats.replies.get("503", 0) > stats.replies.get("401", 0)
    # Alive and answering afterwards, from the flood source too once its bucket refills.
    with SipClient(*edge.target, "udp", timeout=3.0) as client:
        assert client.request_with_auth("REGISTER", edge.uri, USER, PASSWORD, "MD5").status == 200
    with UdpPeer(FLOODER, edge.target) as peer:
        pong = peer.ping()
        assert pong is not None and pong.status == 200
    assert edge.events("bug") == []


# --------------------------------------------------------------------------- SECURITY-CASES 6


LORIS_CONNECTIONS = 50
READ_DEADLINE = 2.0
SLACK = 3.0  # a loaded 2-core machine: timer and scheduling delays


def test_case_06_tcp_slowloris(edge_factory: EdgeFactory) -> None:
    """50 connections dribble a REGISTER one byte per second: each is closed within
    read_deadline (+ slack) of its first byte, while a normal TCP client registers."""
    edge = edge_factory(limits={"read_deadline": READ_DEADLINE})
    request = UdpPeer(LORIS, edge.target)
    message = request.build()
    request.close()
    socks: list[socket.socket] = []
    first_byte: dict[int, float] = {}
    closed_at: dict[int, float] = {}
    try:
        for _ in range(LORIS_CONNECTIONS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LORIS, 0))
            sock.settimeout(5)
            sock.connect(edge.target)
            socks.append(sock)
        served = False
        deadline = time.monotonic() + READ_DEADLINE + SLACK + 2
        offset = 0
        next_send = time.monotonic()
        while len(closed_at) < len(socks) and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_send and offset < len(message):
                for i, sock in enumerate(socks):
                    if i in closed_at:
                        continue
                    try:
                        sock.send(message[offset : offset + 1])
                    except OSError:
                        closed_at[i] = time.monotonic()
                        continue
                    first_byte.setdefault(i, time.monotonic())
                offset += 1
                next_send += 1.0
            if not served and offset >= 1:
                # The normal client, while every slow connection is open and dribbling.
                with SipClient(*edge.target, "tcp", timeout=3.0) as client:
                    reply = client.request_with_auth("REGISTER", edge.uri, USER, PASSWORD, "MD5")
                assert reply.status == 200, reply.start_line
                served = True
            open_socks = [s for i, s in enumerate(socks) if i not in closed_at]
            wait = max(0.0, min(next_send - time.monotonic(), 0.2))
            readable, _, _ = select.select(open_socks, [], [], wait) if open_socks else ([], [], [])
            for sock in readable:
                i = socks.index(sock)
                if is_closed(sock):
                    closed_at[i] = time.monotonic()
        assert served
        assert len(closed_at) == LORIS_CONNECTIONS, f"{len(closed_at)} closed"
        lifetimes = sorted(closed_at[i] - first_byte[i] for i in closed_at)
        print(
            f"\nslow-loris: {len(lifetimes)} connections cut after "
            f"{lifetimes[0]:.2f}..{lifetimes[-1]:.2f}s (read_deadline {READ_DEADLINE}s), "
            f"after {offset} bytes each"
        )
        assert lifetimes[0] >= READ_DEADLINE * 0.9, lifetimes
        assert lifetimes[-1] <= READ_DEADLINE + SLACK, lifetimes
    finally:
        for sock in socks:
            sock.close()
    assert edge.daemon.alive()


# --------------------------------------------------------------------------- SECURITY-CASES 9


PER_SOURCE = 10
IDLE_TIMEOUT = 3.0
HANDSHAKE_TIMEOUT = 1.0


def _connect(source: str, target: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(target)
    return sock


def _wait_closed(socks: list[socket.socket], timeout: float) -> float:
    """Seconds until every socket in `socks` is closed by the peer (TimeoutError otherwise)."""
    start = time.monotonic()
    wait_for(lambda: all(is_closed(s) for s in socks), timeout, "the daemon to close them")
    return time.monotonic() - start


def test_case_09_connection_exhaustion(edge_factory: EdgeFactory, tls_files: TlsFiles) -> None:
    edge = edge_factory(
        tls=True,
        limits={
            "max_connections_per_source": PER_SOURCE,
            "idle_timeout": IDLE_TIMEOUT,
            "tls_handshake_timeout": HANDSHAKE_TIMEOUT,
        },
    )
    assert edge.tls_port is not None
    held: list[socket.socket] = []
    extra: list[socket.socket] = []
    half_open: list[socket.socket] = []
    try:
        for _ in range(PER_SOURCE):
            held.append(_connect(HOARDER, edge.target))
        # Each held connection is admitted and served: an RFC 5626 CRLFCRLF ping gets a pong.
        for sock in held:
            sock.sendall(b"\r\n\r\n")
        for sock in held:
            assert sock.recv(16) == b"\r\n"
        pinged = time.monotonic()
        for _ in range(5):
            extra.append(_connect(HOARDER, edge.target))
        cut = _wait_closed(extra, 2.0)  # "at once": long before the idle timeout
        assert not any(is_closed(s) for s in held)
        # A whitelisted client is served while the hoarder holds its 10 connections.
        with SipClient(*edge.target, "tcp", timeout=3.0) as client:
            assert (
                client.request_with_auth("REGISTER", edge.uri, USER, PASSWORD, "MD5").status == 200
            )

        # Half-open TLS: one connection says nothing, one sends half a ClientHello record.
        tls_target = (V4, edge.tls_port)
        opened = time.monotonic()
        half_open = [_connect(HALF_OPEN, tls_target), _connect(HALF_OPEN, tls_target)]
        half_open[1].sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        wait_for(lambda: all(is_closed(s) for s in half_open), HANDSHAKE_TIMEOUT + SLACK, "TLS cut")
        handshake_cut = time.monotonic() - opened

        wait_for(lambda: all(is_closed(s) for s in held), IDLE_TIMEOUT + SLACK, "idle cut")
        idle_cut = time.monotonic() - pinged
        print(
            f"\nconnections: over-cap closed in {cut:.2f}s, half-open TLS in {handshake_cut:.2f}s"
            f" (timeout {HANDSHAKE_TIMEOUT}s), idle in {idle_cut:.2f}s (timeout {IDLE_TIMEOUT}s)"
        )
        assert handshake_cut >= HANDSHAKE_TIMEOUT * 0.9
        assert idle_cut >= IDLE_TIMEOUT * 0.9
    finally:
        for sock in held + extra + half_open:
            sock.close()
    # Afterwards: the hoarder's slots are free again and whitelisted clients get TCP and TLS.
    with SipClient(*edge.target, "tcp", timeout=3.0) as client:
        assert client.request_with_auth("REGISTER", edge.uri, USER, PASSWORD, "MD5").status == 200
    with SipClient(
        V4, edge.tls_port, "tls", ssl_context=tls_files.client_context(), timeout=3.0
    ) as client:
        tls_uri = f"sip:{V4}:{edge.tls_port};transport=tls"
        assert client.request_with_auth("REGISTER", tls_uri, USER, PASSWORD, "MD5").status == 200


def test_case_09_global_cap_keeps_whitelisted_service(edge_factory: EdgeFactory) -> None:
    """Two sources no trunk admits try to hold 10 connections each (the per-source cap) against
    max_connections 20: together they get only the share left once the reserve for whitelisted
    sources is kept (20 - max(2, min(10, 20 // 2)) = 10, README "Limits"), the rest is cut at
    once, and the whitelisted client still gets a TCP connection served."""
    edge = edge_factory(
        whitelist=(V4,),
        limits={"max_connections_per_source": 10, "max_connections": 20},
    )
    held: list[socket.socket] = []
    try:
        for source in (HOARDER, STRANGER):
            for _ in range(10):
                sock = _connect(source, edge.target)
                held.append(sock)
                with contextlib.suppress(OSError):  # a cut connection may refuse the write
                    sock.sendall(b"\r\n\r\n")
        served, cut = 0, 0
        for sock in held:
            try:
                answer = sock.recv(16)
            except ConnectionResetError:
                answer = b""
            if answer == b"\r\n":
                served += 1
            else:
                assert answer == b"", answer
                cut += 1
        assert (served, cut) == (10, 10)  # the strangers' share is full
        with SipClient(*edge.target, "tcp", timeout=3.0) as client:
            reply = client.request_with_auth("REGISTER", edge.uri, USER, PASSWORD, "MD5")
        assert reply.status == 200
    finally:
        for sock in held:
            sock.close()


# --------------------------------------------------------------------------- SECURITY-CASES 8


def _crafted(target: tuple[str, int]) -> dict[str, bytes]:
    host, port = target
    via = f"Via: SIP/2.0/UDP {STRANGER}:5060;branch=z9hG4bKamp1"
    base = [
        via,
        "Max-Forwards: 70",
        f"From: <sip:a@{host}>;tag=1",
        f"To: <sip:b@{host}>",
        "Call-ID: amp",
    ]
    return {
        "empty": b"",
        "crlf": b"\r\n",
        "garbage": b"\x00\xff" * 8,
        "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "tiny-options": f"OPTIONS sip:{host}:{port} SIP/2.0\r\n{via}\r\n\r\n".encode(),
        "no-cseq": (f"INVITE sip:b@{host} SIP/2.0\r\n" + "\r\n".join(base) + "\r\n\r\n").encode(),
        "bad-length": (
            f"REGISTER sip:{host} SIP/2.0\r\n"
            + "\r\n".join(base)
            + "\r\nCSeq: 1 REGISTER\r\nContent-Length: 99999\r\n\r\n"
        ).encode(),
        "bad-version": (
            f"OPTIONS sip:b@{host} SIP/7.0\r\n" + "\r\n".join(base) + "\r\nCSeq: 1 OPTIONS\r\n\r\n"
        ).encode(),
        "register": (
            f"REGISTER sip:{host} SIP/2.0\r\n"
            + "\r\n".join(base)
            + "\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        "invite": (
            f"INVITE sip:b@{host} SIP/2.0\r\n"
            + "\r\n".join(base)
            + "\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        "unknown-method": (
            f"FOO sip:b@{host} SIP/2.0\r\n" + "\r\n".join(base) + "\r\nCSeq: 1 FOO\r\n\r\n"
        ).encode(),
        "unknown-scheme": (
            "OPTIONS isbn:2983792873 SIP/2.0\r\n"
            + "\r\n".join(base)
            + "\r\nCSeq: 1 OPTIONS\r\n\r\n"
        ).encode(),
        "max-forwards-0": (
            f"OPTIONS sip:b@{host} SIP/2.0\r\n"
            + "\r\n".join(base).replace("Max-Forwards: 70", "Max-Forwards: 0")
            + "\r\nCSeq: 1 OPTIONS\r\n\r\n"
        ).encode(),
    }


def test_no_amplification(edge_factory: EdgeFactory) -> None:
    """From 127.0.0.7, which no trunk admits: crafted and RFC 4475 torture requests (each from
    its own socket) get a reply no larger than themselves, or none."""
    edge = edge_factory(whitelist=(V4,))
    probes = _crafted(edge.target)
    for path in sorted((CORPORA / "rfc4475").glob("*.dat")):
        data = path.read_bytes()
        if len(data) <= 60_000:
            probes[path.name] = data
    peers = {name: UdpPeer(STRANGER, edge.target) for name in probes}
    try:
        for name, data in probes.items():
            peers[name].send(data)
        # A ping from the whitelisted address: its 200 comes after every probe was handled.
        with UdpPeer(V4, edge.target) as ping:
            pong = ping.ping(timeout=5.0)
            assert pong is not None and pong.status == 200
        answered = {}
        for name, peer in peers.items():
            replies = []
            while (raw := peer.receive(0)) is not None:
                replies.append(raw)
            if replies:
                answered[name] = (len(probes[name]), [len(r) for r in replies])
                for reply in replies:
                    assert len(reply) <= len(probes[name]), (name, reply)
    finally:
        for peer in peers.values():
            peer.close()
    print(f"\nno amplification: {len(answered)}/{len(probes)} probes answered: {answered}")
    assert edge.daemon.alive()
    assert edge.events("bug") == []


# --------------------------------------------------------------------------- rate limit


@pytest.mark.parametrize("action", ["503", "drop"])
def test_rate_limit_503(edge_factory: EdgeFactory, action: str) -> None:
    """rate 5/s, burst 5: a burst of 12 unauthenticated REGISTERs from one source that only an
    open trunk admits gets 5 challenges, then 503 + Retry-After (or silence with rate_action
    drop). A source a trunk's whitelist names is not limited by this bucket (issue 12 item 6:
    `test_whitelisted_carrier_is_not_rate_limited`)."""
    edge = edge_factory(whitelist=(), protection={"rate": 5, "burst": 5, "rate_action": action})
    burst = 12
    with UdpPeer(ATTACKER, edge.target) as peer:
        for _ in range(burst):
            peer.send(peer.build())
        pong, replies = peer.ping_collect()
    assert pong.status == 200
    statuses = [r.status for r in replies]
    # 5 tokens, plus at most one refilled while the burst was handled on a slow machine.
    challenged = statuses.count(401)
    assert 5 <= challenged <= 6, statuses
    assert statuses[:5] == [401] * 5, statuses
    if action == "503":
        assert statuses == [401] * challenged + [503] * (burst - challenged), statuses
        for reply in replies[challenged:]:
            assert reply.header("Retry-After") is not None, reply.raw
    else:
        assert statuses == [401] * challenged, statuses
    limited = edge.events("rate_limited", src_ip=ATTACKER)
    assert len(limited) == burst - challenged


def test_whitelisted_carrier_is_not_rate_limited(edge_factory: EdgeFactory, sipp: Sipp) -> None:
    """Issue 12 item 6: a carrier SBC named in the trunk's whitelist sends 300 calls/s with
    digest from one address under the default `protection` rate (50/s per source) with a
    burst of 100: no call fails, nothing is rate limited. The bucket would have refused the
    101st challenge: 450 calls hold 450 challenges, more than 100 + 50/s refill even if SIPp
    ran at 100 calls/s (with the default burst of 400, 450 calls did not fail when the
    whitelisted source was limited). Bounded: 450 calls (1.5 s at 300/s), at most 150 at a
    time, SIPp's own timeout."""
    edge = edge_factory(whitelist=(V4,), protection={"burst": 100})
    result = sipp.run(
        "uac_invite_auth.xml",
        f"{V4}:{edge.port}",
        calls=450,
        rate=300,
        limit=150,
        pause_ms=10,
        timeout_s=40,
        recv_timeout_ms=10000,
    )
    assert result.ok and result.failed == 0, result.explain() + edge.daemon.describe()
    assert result.successful == 450
    assert edge.events("rate_limited") == []


# --------------------------------------------------------------------------- bans


BAN_SECONDS = 2.0


def test_ban_expires_and_is_logged(edge_factory: EdgeFactory) -> None:
    """ban_duration 2 s: 5 wrong answers ban 127.0.0.2 (silence), it is answered again once the
    ban expires, and the log says `banned` then `unbanned` for it."""
    edge = edge_factory(protection={"ban_duration": BAN_SECONDS}, metrics=True)
    get_banned(edge, ATTACKER)
    banned_at = time.monotonic()
    assert edge.metrics()["sipguard_bans_active"] == 1
    with UdpPeer(ATTACKER, edge.target) as peer:
        # Bounded polling: one ping per 0.3 s (each waits 0.3 s for its answer).
        pong = wait_for(lambda: peer.ping(timeout=0.3), BAN_SECONDS + SLACK, "the ban to end")
        assert pong.status == 200
        answered_after = time.monotonic() - banned_at
        # Served as before: a challenge for a REGISTER, and the right password admits.
        _, ok = peer.register(PASSWORD)
        assert ok is not None and ok.status == 200, ok
    unbanned = edge.daemon.wait_event("unbanned", timeout=3.0, src_ip=ATTACKER)
    events = [
        e["event"]
        for e in edge.daemon.logs()
        if e.get("event") in ("banned", "unbanned") and e.get("src_ip") == ATTACKER
    ]
    print(f"\nban: answered again {answered_after:.2f}s after the banned event; {unbanned}")
    assert events == ["banned", "unbanned"]
    assert edge.metrics()["sipguard_bans_active"] == 0


def test_ban_duration_zero_disables_bans(edge_factory: EdgeFactory) -> None:
    """`protection.ban_duration: 0` passes check-config; the daemon must start with it (it used
    to die at start, and on SIGHUP half-apply the reload, with the guard's ValueError) and then
    never ban: every wrong answer gets its 403, the right one is admitted."""
    edge = edge_factory(protection={"ban_duration": 0})
    with UdpPeer(ATTACKER, edge.target) as peer:
        for _ in range(6):
            _, answer = peer.register("not-the-password")
            assert answer is not None and answer.status == 403
        _, ok = peer.register(PASSWORD)
        assert ok is not None and ok.status == 200, ok
    assert edge.events("banned") == []
