"""The SIP test client against a tiny in-test digest server on 127.0.0.1 (ephemeral port)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from sipguard.auth.answer import DigestAnswer, MalformedAnswer, verify
from sipguard.auth.credentials import CredentialStore
from sipguard.auth.digest import build_challenges, compute_ha1, compute_response
from sipguard.auth.nonce import NonceIssuer, NonceTracker, NonceVerdict, expires_at
from sipguard.settings import Credential, Trunk
from tests.conftest import CORPORA
from tests.polling import wait_for
from tests.sipclient import (
    NoMatchingChallenge,
    SipClient,
    SipMessage,
    answer_challenge,
    build_request,
    parse_auth_params,
    parse_message,
    pick_challenge,
)

REALM = "sipguard.test"
USER, PASSWORD = "alice", "wonder land\"'"


class DigestServer:
    """Challenges every request without credentials, then checks them with sipguard.auth."""

    def __init__(
        self,
        transport: str,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5", "SHA-512-256"),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.transport = transport
        self.algorithms = algorithms
        self.ssl_context = ssl_context
        self.issuer = NonceIssuer(b"s" * 32)
        self.tracker = NonceTracker(64)
        trunk = Trunk(name="t", credentials=(Credential(username=USER, password=PASSWORD),))
        self.store = CredentialStore.build([trunk], REALM)
        self.received: list[SipMessage] = []
        self.counter = 0
        self.stop = threading.Event()
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        if transport != "udp":
            self.sock.listen(4)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def handle(self, request: SipMessage, source_ip: str) -> bytes | None:
        self.received.append(request)
        if request.method == "ACK":
            return None
        now = time.time()
        register = request.method == "REGISTER"
        answer_name = "Authorization" if register else "Proxy-Authorization"
        value = request.header(answer_name)
        if value is None:
            self.counter += 1
            nonce = self.issuer.issue(REALM, source_ip, now, 30, self.counter.to_bytes(8, "big"))
            challenges = build_challenges(
                REALM, nonce, self.issuer.opaque(REALM), self.algorithms, False
            )
            name = "WWW-Authenticate" if register else "Proxy-Authenticate"
            extra = [(name, c.decode()) for c in challenges]
            return self.reply(request, 401 if register else 407, extra)
        try:
            answer = DigestAnswer.from_params(parse_auth_params(value)[1])
        except (ValueError, MalformedAnswer):
            return self.reply(request, 400, [])
        entry = self.store.lookup(answer.username, answer.algorithm)
        ha1 = entry.ha1 if entry else self.store.dummy_ha1(answer.algorithm)
        good = verify(answer, ha1, request.method, request.body)
        deadline = expires_at(answer.nonce)
        ok = (
            good
            and entry is not None
            and answer.realm == REALM
            and answer.uri == request.uri
            and self.issuer.check(answer.nonce, REALM, source_ip, now) is NonceVerdict.VALID
            and self.issuer.check_opaque(answer.opaque or "", REALM)
            and deadline is not None
            and self.tracker.accept(answer.nonce, answer.nonce_count, deadline, now)
        )
        return self.reply(request, 200 if ok else 403, [])

    @staticmethod
    def reply(request: SipMessage, status: int, extra: list[tuple[str, str]]) -> bytes:
        reasons = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}
        lines = [f"SIP/2.0 {status} {reasons.get(status, 'Proxy Authentication Required')}"]
        lines += [f"Via: {v}" for v in request.headers_named("Via")]
        lines += [f"From: {request.header('From')}", f"To: {request.header('To')};tag=srv"]
        lines += [f"Call-ID: {request.header('Call-ID')}", f"CSeq: {request.header('CSeq')}"]
        lines += [f"{n}: {v}" for n, v in extra]
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                if self.transport == "udp":
                    data, peer = self.sock.recvfrom(65535)
                    response = self.handle(parse_message(data), peer[0])
                    if response is not None:
                        self.sock.sendto(response, peer)
                else:
                    conn, peer = self.sock.accept()
                    with contextlib.closing(conn):
                        self._serve_stream(conn, peer[0])
            except TimeoutError:
                continue

    def _serve_stream(self, conn: socket.socket, source_ip: str) -> None:
        conn.settimeout(5)
        if self.ssl_context is not None:
            conn = self.ssl_context.wrap_socket(conn, server_side=True)
        conn.settimeout(0.05)
        buffer = b""
        while not self.stop.is_set():
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                length = int(parse_message(buffer[: end + 4]).header("Content-Length") or 0)
                if len(buffer) >= end + 4 + length:
                    data, buffer = buffer[: end + 4 + length], buffer[end + 4 + length :]
                    response = self.handle(parse_message(data), source_ip)
                    if response is not None:
                        conn.sendall(response)
                    continue
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk


@pytest.fixture(params=["udp", "tcp", "tls"])
def server_and_client(
    request: pytest.FixtureRequest, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> Iterator[tuple[DigestServer, SipClient]]:
    transport: str = request.param
    server = DigestServer(transport, ssl_context=tls_contexts[0] if transport == "tls" else None)
    try:
        client_ctx = tls_contexts[1] if transport == "tls" else None
        with SipClient("127.0.0.1", server.port, transport, ssl_context=client_ctx) as client:
            yield server, client
    finally:
        server.close()


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5", "SHA-512-256"])
def test_register_with_each_algorithm(
    server_and_client: tuple[DigestServer, SipClient], algorithm: str
) -> None:
    server, client = server_and_client
    response = client.request_with_auth("REGISTER", "sip:sipguard.test", USER, PASSWORD, algorithm)
    assert response.status == 200
    first, second = server.received
    assert first.cseq == (1, "REGISTER") and second.cseq == (2, "REGISTER")
    assert first.header("Call-ID") == second.header("Call-ID")  # RFC 3261 §22.2
    assert first.branch != second.branch
    _, params = parse_auth_params(second.header("Authorization") or "")
    assert params["algorithm"] == algorithm
    assert (params["qop"], params["nc"]) == ("auth", "00000001")


def test_wrong_password_is_refused(server_and_client: tuple[DigestServer, SipClient]) -> None:
    _, client = server_and_client
    assert client.request_with_auth("REGISTER", "sip:r", USER, "nope").status == 403


def test_invite_gets_407_answered_and_acked(
    server_and_client: tuple[DigestServer, SipClient],
) -> None:
    server, client = server_and_client
    body = b"v=0\r\n"
    response = client.request_with_auth(
        "INVITE", "sip:bob@sipguard.test", USER, PASSWORD, "MD5", body=body
    )
    assert response.status == 200
    wait_for(lambda: len(server.received) == 3, 5, "three requests", 0.005)
    invite, ack, second = server.received
    assert ack.method == "ACK" and ack.branch == invite.branch
    assert ack.cseq == (invite.cseq[0], "ACK")
    assert "tag=srv" in (ack.header("To") or "")
    assert second.header("Proxy-Authorization") is not None and second.body == body


def test_no_challenge_with_that_algorithm() -> None:
    server = DigestServer("udp", algorithms=("MD5",))
    try:
        with SipClient("127.0.0.1", server.port) as client:
            with pytest.raises(NoMatchingChallenge) as exc:
                client.request_with_auth("REGISTER", "sip:r", USER, PASSWORD, "SHA-256")
            assert exc.value.response.status == 401
            # None answers the first challenge, as SIPp and most UAs do.
            assert client.request_with_auth("REGISTER", "sip:r", USER, PASSWORD, None).status == 200
    finally:
        server.close()


def test_receive_timeout() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        with SipClient("127.0.0.1", port, timeout=0.2) as client, pytest.raises(TimeoutError):
            client.request("OPTIONS", "sip:127.0.0.1")
    finally:
        silent.close()


def test_client_refuses_bad_transport_setup() -> None:
    with pytest.raises(ValueError):
        SipClient("127.0.0.1", 9, "sctp")
    with pytest.raises(ValueError):
        SipClient("127.0.0.1", 9, "tls")


# --- pure parts ------------------------------------------------------------------------------


def test_answer_challenge_reproduces_rfc2617() -> None:
    (vector,) = [
        v
        for v in json.loads((CORPORA / "digest" / "vectors.json").read_bytes())
        if v["id"] == "rfc2617-3.5"
    ]
    challenge = {
        "realm": vector["realm"],
        "nonce": vector["nonce"],
        "opaque": vector["opaque"],
        "qop": "auth,auth-int",
    }
    value = answer_challenge(
        challenge,
        vector["method"],
        vector["uri"],
        vector["username"],
        vector["password"],
        cnonce=vector["cnonce"],
    )
    scheme, params = parse_auth_params(value)
    assert scheme == "Digest"
    assert params["response"] == vector["expected_response"]
    assert params | {"response": "x"} == {
        "username": "Mufasa",
        "realm": vector["realm"],
        "nonce": vector["nonce"],
        "uri": "/dir/index.html",
        "response": "x",
        "algorithm": "MD5",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "0a4f113b",
        "opaque": vector["opaque"],
    }


def test_answer_challenge_qop_choices() -> None:
    base = {"realm": "r", "nonce": "n", "algorithm": "SHA-256"}
    none = parse_auth_params(answer_challenge(base, "BYE", "sip:x", "u", "p"))[1]
    assert "qop" not in none and "nc" not in none and "cnonce" not in none
    assert none["response"] == compute_response(
        "SHA-256",
        compute_ha1("SHA-256", "u", "r", "p"),
        method="BYE",
        uri="sip:x",
        nonce="n",
        nc=None,
        cnonce=None,
        qop=None,
    )
    authint = parse_auth_params(
        answer_challenge(base | {"qop": "auth-int"}, "BYE", "sip:x", "u", "p", 7, "c", body=b"B")
    )[1]
    assert (authint["qop"], authint["nc"], authint["cnonce"]) == ("auth-int", "00000007", "c")
    answer = DigestAnswer.from_params(authint)
    assert verify(answer, compute_ha1("SHA-256", "u", "r", "p"), "BYE", b"B")
    with pytest.raises(ValueError):
        answer_challenge(base | {"algorithm": "SHA-1"}, "BYE", "sip:x", "u", "p")


def test_parse_auth_params_quoting() -> None:
    scheme, params = parse_auth_params(
        'Digest realm="a, \\"b\\"", qop="auth,auth-int" ,algorithm=SHA-256,stale=true'
    )
    assert scheme == "Digest"
    assert params == {
        "realm": 'a, "b"',
        "qop": "auth,auth-int",
        "algorithm": "SHA-256",
        "stale": "true",
    }


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest realm",
        'Digest realm="a',
        'Digest realm="a\\',
        "Digest a=1 b=2",
        "Digest a=1, a=2",
    ],
)
def test_parse_auth_params_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_auth_params(value)


def test_pick_challenge() -> None:
    head = "SIP/2.0 401 Unauthorized\r\nCSeq: 1 REGISTER\r\n"
    data = (
        head + 'WWW-Authenticate: Basic realm="r"\r\n'
        'WWW-Authenticate: Digest realm="r", nonce="1", algorithm=SHA-256\r\n'
        'WWW-Authenticate: Digest realm="r", nonce="1"\r\n\r\n'
    ).encode()
    response = parse_message(data)
    assert pick_challenge(response, None)[1]["algorithm"] == "SHA-256"
    assert pick_challenge(response, "md5")[1] == {"realm": "r", "nonce": "1"}
    with pytest.raises(NoMatchingChallenge):
        pick_challenge(response, "SHA-512-256")
    with pytest.raises(ValueError):
        pick_challenge(parse_message(b"SIP/2.0 200 OK\r\n\r\n"), None)


def test_build_request_and_parse_back() -> None:
    data = build_request(
        "OPTIONS",
        "sip:[::1]:5060",
        transport="udp",
        local=("::1", 5555),
        from_uri="sip:a@b",
        from_tag="ft",
        to_uri="sip:c@d",
        call_id="cid",
        cseq=9,
        branch="z9hG4bKx",
        headers=[("X-A", "1")],
        body=b"hi",
    )
    message = parse_message(data)
    assert message.method == "OPTIONS" and message.uri == "sip:[::1]:5060"
    assert message.header("v") == "SIP/2.0/UDP [::1]:5555;branch=z9hG4bKx;rport"
    assert message.branch == "z9hG4bKx"
    assert message.cseq == (9, "OPTIONS")
    assert message.header("content-length") == "2" and message.body == b"hi"
    assert message.header("X-A") == "1"
    folded = parse_message(b"SIP/2.0 200 OK\r\nSubject: a\r\n  b\r\n\r\n")
    assert folded.header("s") == "a b" and folded.status == 200 and folded.reason == "OK"
