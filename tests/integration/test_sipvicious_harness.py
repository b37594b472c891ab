"""Self-test of tests/integration/sipvicious.py: the real tools against a fake PBX on loopback.

The fake answers OPTIONS with 200, REGISTER/INVITE for a known user with a digest challenge
(401, MD5, qop=auth) and 200 for the right password, and 404 for unknown users, which is what
svwar and svcrack expect from a PBX that leaks its users. It proves the harness before the
daemon exists, and pins the facts the attack tests rely on (User-Agent, compact mode, source
address) as assertions.
"""

from __future__ import annotations

import hashlib
import re
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.integration.sipvicious import (
    SCANNER_USER_AGENT,
    free_udp_port,
    run_svcrack,
    run_svmap,
    run_svwar,
)

pytestmark = pytest.mark.attack

REALM = "fake.example"
USERS = {"100": "letmein", "101": "x", "105": "y"}
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
_HEADER = re.compile(r"^([A-Za-z-]+)\s*:\s*(.*)$")
_TO_USER = re.compile(r"sips?:([^@;>]+)@")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class FakePbx:
    """A UDP SIP responder that leaks which users exist. Loopback only, stopped by the fixture."""

    host: str = "127.0.0.1"
    sock: socket.socket = field(init=False)
    requests: list[tuple[tuple[str, int], dict[str, str], str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _nonce: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            data, peer = self.sock.recvfrom(65535)
            answer = self._answer(data.decode("utf-8", "replace"), peer)
            if answer:
                self.sock.sendto(answer.encode(), peer)

    def _answer(self, text: str, peer: tuple[str, int]) -> str | None:
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        method = head[0].split(" ", 1)[0]
        if method.startswith("SIP/") or method == "ACK":
            return None
        lines: list[tuple[str, str]] = []
        headers: dict[str, str] = {}
        for line in head[1:]:
            if match := _HEADER.match(line):
                name = match.group(1).lower()
                lines.append((name, line))
                headers.setdefault(name, match.group(2))
        self.requests.append((peer, headers, method))
        to = headers.get("to", headers.get("t", ""))
        user_match = _TO_USER.search(to)
        user = user_match.group(1) if user_match else ""
        extra = ""
        if method == "OPTIONS":
            status = "200 OK"
        elif user not in USERS:
            status = "404 Not Found"
        elif self._authorized(headers, method, USERS[user]):
            status = "200 OK"
        else:
            self._nonce += 1
            status = "401 Unauthorized"
            extra = (
                f'WWW-Authenticate: Digest realm="{REALM}", nonce="n{self._nonce:08x}", '
                'algorithm=MD5, qop="auth"\r\n'
            )
        # RFC 3261 §8.2.6.2: copy Via, From (with its tag: svwar and svcrack read their own
        # state back from it), To, Call-ID and CSeq.
        copied = "".join(
            f"{line}\r\n"
            for name, line in lines
            if name in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")
        )
        return (
            f"SIP/2.0 {status}\r\n{copied}Server: FakePBX 1.0\r\n{extra}Content-Length: 0\r\n\r\n"
        )

    @staticmethod
    def _authorized(headers: dict[str, str], method: str, password: str) -> bool:
        value = headers.get("authorization", "")
        if not value.startswith("Digest "):
            return False
        params = {k: q or t for k, q, t in _PARAM.findall(value)}
        try:
            ha1 = _md5(f"{params['username']}:{REALM}:{password}")
            ha2 = _md5(f"{method}:{params['uri']}")
            if "cnonce" in params:
                expected = _md5(
                    f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}"
                )
            else:
                expected = _md5(f"{ha1}:{params['nonce']}:{ha2}")
        except KeyError:
            return False
        return params.get("response") == expected


@pytest.fixture
def pbx() -> Iterator[FakePbx]:
    fake = FakePbx()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def test_svmap_finds_device(pbx: FakePbx) -> None:
    result = run_svmap(pbx.host, pbx.port)
    assert not result.run.timed_out, result.run.stderr
    assert result.devices == {f"127.0.0.1:{pbx.port}": "FakePBX 1.0"}
    assert result.run.duration < 10
    peer, headers, method = pbx.requests[0]
    assert peer[0] == "127.0.0.1"
    assert method == "OPTIONS"
    assert headers["user-agent"] == SCANNER_USER_AGENT
    assert '"sipvicious"' in headers["from"]


def test_svwar_finds_extensions(pbx: FakePbx) -> None:
    result = run_svwar(pbx.host, pbx.port, extensions="98-106")
    assert result.run.returncode == 40, result.run.stderr
    assert result.extensions == {"100": "reqauth", "101": "reqauth", "105": "reqauth"}
    assert not result.refused_unknown_check
    methods = {method for _, _, method in pbx.requests}
    assert methods == {"REGISTER"}
    assert {h["user-agent"] for _, h, _ in pbx.requests} == {SCANNER_USER_AGENT}


def test_svwar_dictionary_compact_from_other_source(pbx: FakePbx) -> None:
    source_port = free_udp_port("127.0.0.2")
    result = run_svwar(
        pbx.host,
        pbx.port,
        dictionary=["alice", "100", "bob", "105"],
        source_ip="127.0.0.2",
        source_port=source_port,
        compact=True,
    )
    assert result.extensions == {"100": "reqauth", "105": "reqauth"}, result.run.stderr
    # -b chooses the source address, -P the port; -c drops the User-Agent header.
    assert {peer for peer, _, _ in pbx.requests} == {("127.0.0.2", source_port)}
    assert all("user-agent" not in headers for _, headers, _ in pbx.requests)


def test_svwar_gives_up_when_unknown_users_are_challenged(pbx: FakePbx) -> None:
    # What sipguard does: every user is challenged, existing or not (SECURITY-CASES 26).
    original = FakePbx._answer

    def challenge_everyone(self: FakePbx, text: str, peer: tuple[str, int]) -> str | None:
        answer = original(self, text, peer)
        return answer.replace("404 Not Found", "401 Unauthorized") if answer else None

    pbx._answer = challenge_everyone.__get__(pbx)  # type: ignore[method-assign]
    result = run_svwar(pbx.host, pbx.port, extensions="98-106")
    assert result.refused_unknown_check
    assert result.extensions == {}


def test_svcrack_finds_password(pbx: FakePbx) -> None:
    result = run_svcrack(
        pbx.host, pbx.port, username="100", passwords=["123456", "password", "letmein", "zz"]
    )
    assert result.run.returncode == 40, result.run.stderr
    assert result.passwords == {"100": "letmein"}
    assert result.password == "letmein"
    # One REGISTER without credentials, then one guess per challenge.
    guesses = [h for _, h, _ in pbx.requests if "authorization" in h]
    assert len(guesses) == 3


def test_svcrack_reports_nothing_for_wrong_dictionary(pbx: FakePbx) -> None:
    result = run_svcrack(pbx.host, pbx.port, username="101", passwords=["a", "b", "c"])
    assert result.password is None
    assert result.run.returncode == 0, result.run.stderr
    assert not result.run.timed_out


def test_helpers_refuse_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        run_svmap("192.0.2.1", 5060)
    with pytest.raises(ValueError, match="loopback"):
        run_svwar("127.0.0.1", 5060, source_ip="0.0.0.0")
