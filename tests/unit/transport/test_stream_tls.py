"""MemoryTls: server-side TLS on memory BIOs, driven byte for byte by a client on memory BIOs."""

from __future__ import annotations

import ssl

import pytest

from sipguard.transport.stream_tls import Ending, MemoryTls


class Client:
    """A TLS client on memory BIOs: what it writes is handed to the server by hand."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")

    def step(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def records(self) -> bytes:
        return self.outgoing.read()


def connect(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> tuple[MemoryTls, Client]:
    server, client = MemoryTls(contexts[0]), Client(contexts[1])
    done: bool | None = False
    for _ in range(10):
        client_done = client.step()
        server.receive(client.records())
        done = server.handshake()
        client.incoming.write(server.records())
        if done and client_done:
            return server, client
    pytest.fail(f"no handshake (server: {done})")


def test_handshake_then_plaintext_both_ways(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = connect(tls_contexts)
    client.tls.write(b"REGISTER sip:x SIP/2.0\r\n")
    client.tls.write(b"\r\n")
    server.receive(client.records())
    assert server.read() == (b"REGISTER sip:x SIP/2.0\r\n\r\n", Ending.MORE)
    assert server.read() == (b"", Ending.MORE)
    server.write(b"SIP/2.0 401 Unauthorized\r\n\r\n")
    client.incoming.write(server.records())
    assert client.tls.read(1000) == b"SIP/2.0 401 Unauthorized\r\n\r\n"
    assert server.records() == b""


def test_half_a_record_reads_nothing_yet(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = connect(tls_contexts)
    client.tls.write(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    record = client.records()
    server.receive(record[:10])
    assert server.read() == (b"", Ending.MORE)
    server.receive(record[10:])
    assert server.read() == (b"OPTIONS sip:x SIP/2.0\r\n\r\n", Ending.MORE)


def test_close_notify_both_ways(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = connect(tls_contexts)
    with pytest.raises(ssl.SSLWantReadError):
        client.tls.unwrap()  # sends close_notify, waits for the server's
    server.receive(client.records())
    # CPython's SSLObject reads a received close_notify as b"" (SSL_RECEIVED_SHUTDOWN) rather
    # than raising SSLZeroReturnError (then: Ending.CLOSED); either way nothing is read, and
    # the peer's TCP FIN that follows closes the connection.
    plaintext, ending = server.read()
    assert plaintext == b""
    assert ending is not Ending.BROKEN
    server.close_notify()
    client.incoming.write(server.records())
    client.tls.unwrap()  # the server's close_notify arrived: no error


def test_noise_fails_the_handshake_with_an_alert(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server = MemoryTls(tls_contexts[0])
    server.receive(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 40)
    assert server.handshake() is None


def test_garbage_after_the_handshake_breaks_the_read(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, _client = connect(tls_contexts)
    server.receive(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # application data that is no record
    assert server.read() == (b"", Ending.BROKEN)
