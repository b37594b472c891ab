"""scripts/bench_flow: whole calls through the core, shaped as scripts/bench's SIPp sends them.

Owns: the messages of authenticated REGISTER and INVITE calls as SIPp's bench scenarios
(uac_register.xml, uac_invite.xml, uas.xml) write them, the upstream's Vias echoed on one line,
its Record-Route echoed, SDP bodies, fed to one `Core` in the order the daemon receives them
(INVITE -> 407, ACK absorbed, INVITE with digest -> forwarded, 100/180/200 relayed, ACK and BYE
in dialog, the BYE's 200 relayed; REGISTER -> 401, REGISTER with digest -> forwarded, its 200).
A first pass records every message as the core will see it (the challenge's nonce answered);
later passes replay the recording on a fresh core with the same key and clock, which decides
every message the same way (checked). Prints per message: CPU µs (median and range of runs),
Python function calls and calls with C (cProfile, exact). `record` and `replay` are the steps
scripts/bench_flow runs under callgrind to count instructions per message.

Never does: open a socket, read the wall clock for decisions (a fixed `now` per message).
"""

from __future__ import annotations

import collections
import cProfile
import gc
import pickle
import pstats
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sipguard.auth.digest import compute_ha1, compute_response
from sipguard.config import load_settings
from sipguard.proxy.actions import Action, Address, Forward, Reply, Transport
from sipguard.proxy.core import Core

CONFIG = """\
listen: [udp://127.0.0.1:5060]
upstream: [sip:127.0.0.1:5070;transport=udp]
auth: {realm: sipguard.test, algorithms: [MD5], nonce_ttl: 300}
trunks:
  - name: bench
    whitelist: [127.0.0.1]
    credentials: [{username: alice, password: s3cret}]
protection: {never_ban: [127.0.0.1]}
"""
KEY = b"bench-flow-nonce-key-0123456789ab"
START = 1_780_000_000.0
CLIENT = Address(Transport.UDP, "127.0.0.1", 5063)
UAS = Address(Transport.UDP, "127.0.0.1", 5070)
LISTENER = Address(Transport.UDP, "127.0.0.1", 5060)
TOWARD_UAS = Address(Transport.UDP, "127.0.0.1", 40234)  # the daemon's upstream socket
SDP = (
    b"v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6020 RTP/AVP 0\r\n"
)
NONCE = re.compile(rb'nonce="([^"]+)"')
OPAQUE = re.compile(rb'opaque="([^"]+)"')
TAG = re.compile(rb"\nTo:[^\r]*;tag=([^\r;]+)")

Record = tuple[bytes, Address, Address, float]


def core() -> Core:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sipguard.yaml"
        path.write_text(CONFIG)
        path.chmod(0o600)
        settings = load_settings(str(path))
    c = Core(settings, nonce_key=KEY, boot_id=b"bench001", started_at=START - 10)
    c.use_upstream_sockets([TOWARD_UAS])
    return c


def request(
    method: str,
    i: int,
    cseq: int,
    branch: str,
    extra: list[str],
    body: bytes,
    *,
    uri: str = "sip:service@127.0.0.1:5060",
    route: str = "",
) -> bytes:
    """A request of call `i` as SIPp's bench UAC writes it: an in-dialog one to the Contact
    of the 200 (`uri`), its route set (`route`: the Record-Route reversed, one line) after
    the Via, as SIPp's [routes] writes it."""
    to_tag = extra.pop(0) if extra and extra[0].startswith(";tag=") else ""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-7-{i}-{branch}",
        *([f"Route: {route}"] if route else []),
        f"From: <sip:alice@sipguard.test>;tag={i}i7",
        f"To: <sip:service@sipguard.test>{to_tag}",
        f"Call-ID: {i}-7@127.0.0.1",
        f"CSeq: {cseq} {method}",
        *extra,
        "Max-Forwards: 70",
        *(["Content-Type: application/sdp"] if body else []),
        f"Content-Length: {len(body):5d}" if body else "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def authorization(challenge: bytes, method: str, header: str) -> str:
    nonce = NONCE.search(challenge).group(1).decode()  # type: ignore[union-attr]
    opaque = OPAQUE.search(challenge).group(1).decode()  # type: ignore[union-attr]
    uri = "sip:service@127.0.0.1:5060"
    ha1 = compute_ha1("MD5", "alice", "sipguard.test", "s3cret")
    response = compute_response(
        "MD5",
        ha1,
        method=method,
        uri=uri,
        nonce=nonce,
        nc="00000001",
        cnonce="6b8b4567",
        qop="auth",
    )
    return (
        f'{header}: Digest username="alice",realm="sipguard.test",cnonce="6b8b4567",'
        f'nc=00000001,qop=auth,uri="{uri}",nonce="{nonce}",response="{response}",'
        f'algorithm=MD5,opaque="{opaque}"'
    )


def answer(forward: bytes, status: str, i: int, *, dialog: bool, body: bytes = b"") -> bytes:
    """The bench UAS's response to a request we forwarded: its Vias echoed on one line
    (SIPp's [last_Via:]), its Record-Route values echoed on one line ([last_Record-Route:]),
    our To-tag."""
    head = forward.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    vias = [line.split(b":", 1)[1].strip() for line in head if line.startswith(b"Via:")]
    rrs = [line.split(b":", 1)[1].strip() for line in head if line.startswith(b"Record-Route:")]
    pick = {
        name: next(line for line in head if line.startswith(name))
        for name in (b"From:", b"To:", b"Call-ID:", b"CSeq:")
    }
    to = pick[b"To:"] + (b";tag=u%d" % i if dialog and b"tag=" not in pick[b"To:"] else b"")
    lines = [b"SIP/2.0 " + status.encode(), b"Via: " + b", ".join(vias)]
    if dialog and rrs:
        lines.append(b"Record-Route: " + b", ".join(rrs))
    lines += [pick[b"From:"], to, pick[b"Call-ID:"], pick[b"CSeq:"]]
    if dialog:
        lines.append(b"Contact: <sip:upstream@127.0.0.1:5070;transport=UDP>")
    if body:
        lines.append(b"Content-Type: application/sdp")
    lines += [b"Content-Length: %d" % len(body), b"", b""]
    return b"\r\n".join(lines) + body


class Recorder:
    """Feeds a flow to a core and keeps every message as the core saw it."""

    def __init__(self) -> None:
        self.core = core()
        self.records: list[Record] = []
        self.now = START

    def send(self, data: bytes, source: Address) -> list[Action]:
        self.now += 0.0002
        self.records.append((data, source, LISTENER if source == CLIENT else TOWARD_UAS, self.now))
        return self.core.handle(data, source, self.records[-1][2], None, self.now)

    def one(self, data: bytes, source: Address, kind: type) -> bytes:
        actions = self.send(data, source)
        assert len(actions) == 1 and isinstance(actions[0], kind), actions
        return actions[0].data  # type: ignore[attr-defined, no-any-return]

    def invite_call(self, i: int) -> None:
        contact = "Contact: <sip:alice@127.0.0.1:5063;transport=UDP>"
        challenge = self.one(request("INVITE", i, 1, "0", [contact], SDP), CLIENT, Reply)
        tag = ";tag=" + TAG.search(challenge).group(1).decode()  # type: ignore[union-attr]
        assert (
            self.send(request("ACK", i, 1, "0", [tag], b""), CLIENT)[0].cause.name == "ACK_ABSORBED"
        )
        auth = authorization(challenge, "INVITE", "Proxy-Authorization")
        sent = self.one(request("INVITE", i, 2, "4", [contact, auth], SDP), CLIENT, Forward)
        for status, dialog, body in (
            ("100 Trying", False, b""),
            ("180 Ringing", True, b""),
            ("200 OK", True, SDP),
        ):
            ok = self.one(answer(sent, status, i, dialog=dialog, body=body), UAS, Forward)
        route_set = [
            value.strip()
            for line in ok.split(b"\r\n")
            if line.startswith(b"Record-Route:")
            for value in line[len(b"Record-Route:") :].decode().split(",")
        ]
        in_dialog = {
            "uri": "sip:upstream@127.0.0.1:5070;transport=UDP",
            "route": ", ".join(reversed(route_set)),
        }
        self.one(request("ACK", i, 2, "8", [f";tag=u{i}"], b"", **in_dialog), CLIENT, Forward)
        bye = self.one(request("BYE", i, 3, "9", [f";tag=u{i}"], b"", **in_dialog), CLIENT, Forward)
        self.one(answer(bye, "200 OK", i, dialog=False), UAS, Forward)

    def register_call(self, i: int) -> None:
        contact = "Contact: <sip:alice@127.0.0.1:5063;transport=UDP>;expires=60"
        challenge = self.one(request("REGISTER", i, 1, "0", [contact], b""), CLIENT, Reply)
        auth = authorization(challenge, "REGISTER", "Authorization")
        sent = self.one(request("REGISTER", i, 2, "4", [contact, auth], b""), CLIENT, Forward)
        self.one(answer(sent, "200 OK", i, dialog=False), UAS, Forward)


def record(flow: str, calls: int) -> list[Record]:
    recorder = Recorder()
    step = recorder.invite_call if flow == "invite" else recorder.register_call
    for i in range(1, calls + 1):
        step(i)
    return recorder.records


def replay(records: list[Record]) -> collections.Counter[str]:
    c = core()
    causes: collections.Counter[str] = collections.Counter()
    for data, source, local, now in records:
        for action in c.handle(data, source, local, None, now):
            causes[action.cause.name] += 1
    return causes


def measure(flow: str, calls: int, runs: int) -> None:
    records = record(flow, calls)
    expected = replay(records)
    gc.collect()
    gc.freeze()  # the recording is not the core's: keep it out of the collector's walks
    times = []
    for _ in range(runs):
        c = core()
        start = time.process_time()
        for data, source, local, now in records:
            c.handle(data, source, local, None, now)
        times.append((time.process_time() - start) / len(records) * 1e6)
        del c
        gc.collect()
    profile = cProfile.Profile()
    profile.enable()
    causes = replay(records)
    profile.disable()
    assert causes == expected, (causes, expected)
    python = total = 0
    for (filename, _line, _name), (_cc, nc, _tt, _ct, _callers) in pstats.Stats(
        profile
    ).stats.items():  # type: ignore[attr-defined]
        total += nc
        python += nc if filename != "~" else 0
    n = len(records)
    print(
        f"{flow:8s} {n:6d} messages ({calls} calls): {statistics.median(times):6.1f} µs/msg"
        f" (range {min(times):.1f}-{max(times):.1f}, {runs} runs)"
        f"  calls/msg {python / n:5.1f} Python, {total / n:5.1f} with C"
        f"  outcomes {dict(sorted(causes.items()))}"
    )


def main(argv: list[str]) -> None:
    if argv[:1] == ["record"]:  # record FLOW CALLS PATH
        Path(argv[3]).write_bytes(pickle.dumps(record(argv[1], int(argv[2]))))
    elif argv[:1] == ["replay"]:  # replay PATH COUNT (the first COUNT messages)
        records = pickle.loads(Path(argv[1]).read_bytes())[: int(argv[2])]
        replay(records)
    else:
        calls = int(argv[0]) if argv else 2000
        for flow in ("register", "invite"):
            measure(flow, calls, runs=5)


if __name__ == "__main__":
    main(sys.argv[1:])
