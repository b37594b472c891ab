"""The transport shell on real loopback sockets, with a test double of the core.

Every scenario runs on both event loops sipguard uses (asyncio's and uvloop). The double core
(`EchoCore`) makes no SIP decision either: it answers `OK <n>`, forwards what starts with `FWD`,
raises on `BOOM`, asks to close on `CLOSE`; that is all the transports need to be exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import trustme
import uvloop

from sipguard.errors import ParseError
from sipguard.logs import configure_logging
from sipguard.metrics import Metrics
from sipguard.observer import Observer
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import (
    Action,
    Address,
    BanEvent,
    Cause,
    Drop,
    Forward,
    Reply,
    Transport,
)
from sipguard.proxy.core import Core
from sipguard.server import NullObserver, ObserverProtocol, Server
from sipguard.settings import AuthSettings, Limits, Listener, Settings, TlsSettings, Trunk
from sipguard.sip.limits import ParserLimits
from sipguard.transport import CoreProtocol
from tests.polling import wait_for_async

T = TypeVar("T")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
DEADLINE = 5.0  # seconds any awaited condition may take before the test fails

Runner = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a scenario to completion on the parametrised event loop, bounded in time."""

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as loop:
            return loop.run(asyncio.wait_for(coro, 15))

    return runner


# -- test doubles ----------------------------------------------------------------------------


def sip(tag: bytes, body: bytes = b"") -> bytes:
    """A message the stream framer accepts (it reads only Content-Length)."""
    head = tag + b" sip:x@127.0.0.1 SIP/2.0\r\nCall-ID: 1\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


class EchoCore:
    """Stands in for sipguard.proxy.core.Core: bytes + peer in, actions out."""

    def __init__(self) -> None:
        self.parser_limits = ParserLimits()
        self.received: list[tuple[bytes, Address, Address, int | None]] = []
        self.failed: list[Forward] = []
        self.upstream: Address | None = None
        self.client: tuple[Address, Address, int | None] | None = None
        self.reconfigured: list[object] = []
        self.upstream_sockets: list[Address] = []
        self.framing_errors: list[ParseError] = []
        self.ticks = 0

    def handle(
        self, data: bytes, source: Address, local: Address, connection: int | None, now: float
    ) -> list[Action]:
        self.received.append((data, source, local, connection))
        if data.startswith(b"BOOM"):
            raise RuntimeError("a defect in the core")
        if data.startswith(b"CLOSE"):
            return [Drop(Cause.PARSE_ERROR, close=True)]
        if data.startswith(b"BCAST"):
            to = Address(source.transport, "255.255.255.255", 5060)
            return [Reply(b"x", to, local, None, Cause.RESPONSE)]
        if data.startswith(b"FWD") and self.upstream is not None:
            self.client = (source, local, connection)
            return [Forward(data, self.upstream, local, None, Cause.ADMITTED_IP)]
        if data.startswith(b"SIP/2.0") and self.client is not None:
            client, client_local, client_connection = self.client
            return [Forward(data, client, client_local, client_connection, Cause.RESPONSE)]
        answer = b"OK %d\r\n" % len(self.received)
        return [Reply(answer, source, local, connection, Cause.OPTIONS_ANSWERED)]

    def framing_error(
        self, error: ParseError, source: Address, local: Address, connection: int, now: float
    ) -> list[Action]:
        self.framing_errors.append(error)
        if not error.routable:
            return [Drop(Cause.PARSE_ERROR)]
        return [
            Reply(b"FRAMING %d\r\n" % error.status, source, local, connection, Cause.PARSE_ERROR)
        ]

    def upstream_failed(self, forward: Forward, now: float) -> list[Action]:
        self.failed.append(forward)
        if self.client is None:
            return [Drop(Cause.UPSTREAM_ERROR)]
        client, local, connection = self.client
        return [Reply(b"503\r\n", client, local, connection, Cause.UPSTREAM_ERROR)]

    def tick(self, now: float) -> list[BanEvent]:
        self.ticks += 1
        return []

    def reconfigure(self, settings: Any) -> None:
        self.reconfigured.append(settings)

    def use_upstream_sockets(self, sockets: Sequence[Address]) -> None:
        self.upstream_sockets = list(sockets)


class RecordingObserver(NullObserver):
    def __init__(self) -> None:
        self.bugs: list[BaseException] = []
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.upstream_errors: list[tuple[Address, str]] = []
        self.decisions: list[Action] = []
        self.started_with: list[str] = []

    def started(self, listeners: Sequence[str]) -> None:
        self.started_with = list(listeners)

    def decision(self, action: Action, source: Address, elapsed: float) -> None:
        self.decisions.append(action)

    def bug(self, exc: BaseException, source: Address) -> None:
        self.bugs.append(exc)

    def connection_opened(self, transport: str) -> None:
        self.opened.append(transport)

    def connection_closed(self, transport: str) -> None:
        self.closed.append(transport)

    def upstream_error(self, to: Address, detail: str) -> None:
        self.upstream_errors.append((to, detail))


# -- helpers ---------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` right now (ephemeral range)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def make_settings(
    *listeners: tuple[str, str],
    tls: TlsSettings | None = None,
    source: str = "test.yaml",
    **limits: Any,
) -> Settings:
    limits.setdefault("shutdown_grace", 0.0)
    return Settings(
        source=source,
        listen=tuple(Listener(kind, host, free_port(host)) for kind, host in listeners),
        tls=tls,
        upstream=(),
        auth=AuthSettings(realm="sipguard.test"),
        trunks=(),
        limits=Limits(**limits),
    )


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    core: CoreProtocol | None = None,
    observer: ObserverProtocol | None = None,
    client_tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    server = Server(
        settings,
        core if core is not None else EchoCore(),
        observer=observer if observer is not None else RecordingObserver(),
        client_tls=client_tls,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def until(condition: Callable[[], bool], what: str = "condition") -> None:
    """Wait for `condition` with a deadline (polled: these are counters, not events)."""
    await wait_for_async(condition, DEADLINE, what)


async def read_closed(reader: asyncio.StreamReader) -> bool:
    """True when the peer closed (EOF or reset) within the deadline."""
    try:
        async with asyncio.timeout(DEADLINE):
            while await reader.read(65536):
                pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    return True


async def connect(address: Address, **kwargs: Any) -> tuple[asyncio.StreamReader, Any]:
    return await asyncio.open_connection(address.host, address.port, **kwargs)


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    async def next(self) -> bytes:
        async with asyncio.timeout(DEADLINE):
            return await self.queue.get()


async def udp_client(address: Address) -> tuple[asyncio.DatagramTransport, UdpClient]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        UdpClient, remote_addr=(address.host, address.port)
    )
    return transport, protocol


# -- TCP framing -----------------------------------------------------------------------------


def test_tcp_pipelined_and_split_messages(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        async with serving(make_settings(("tcp", "127.0.0.1")), core) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(sip(b"A") + sip(b"B", b"body") + sip(b"C"))  # pipelined
            third = sip(b"D", b"v=0\r\n")
            for cut in (5, 40, len(third) - 1):  # one message across writes
                writer.write(third[:cut])
                await writer.drain()
                third = third[cut:]
            writer.write(third)
            lines = [await reader.readline() for _ in range(4)]
            assert lines == [b"OK 1\r\n", b"OK 2\r\n", b"OK 3\r\n", b"OK 4\r\n"]
            assert [m[0][:1] for m in core.received] == [b"A", b"B", b"C", b"D"]
            assert core.received[1][0].endswith(b"\r\n\r\nbody")
            source, local, connection = core.received[0][1:]
            assert source.transport is Transport.TCP and source.host == "127.0.0.1"
            assert local == server.address_of("tcp")
            assert connection is not None
            writer.close()

    run(scenario())


def test_tcp_keepalive_ping_answered(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        async with serving(make_settings(("tcp", "127.0.0.1")), core) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(b"\r\n\r\n")  # RFC 5626 ping
            assert await asyncio.wait_for(reader.readexactly(2), DEADLINE) == b"\r\n"
            writer.write(b"\r\n" + sip(b"A"))  # a pong, then a message: only the message
            assert await reader.readline() == b"OK 1\r\n"
            assert len(core.received) == 1
            writer.close()

    run(scenario())


def test_tcp_missing_content_length_closes(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        observer = RecordingObserver()
        async with serving(make_settings(("tcp", "127.0.0.1")), core, observer) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(b"INVITE sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\nsome body")
            assert await read_closed(reader)
            assert core.received == []
            await until(lambda: observer.closed == ["tcp"], "connection_closed")
            assert len(server.dispatcher.streams) == 0

    run(scenario())


def test_tcp_oversized_header_block_closes(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        async with serving(make_settings(("tcp", "127.0.0.1")), core) as server:
            reader, writer = await connect(server.address_of("tcp"))
            with contextlib.suppress(ConnectionError):
                writer.write(b"INVITE sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * 200_000)
                await writer.drain()
            assert await read_closed(reader)
            assert core.received == []

    run(scenario())


def test_drop_with_close_closes_the_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with serving(make_settings(("tcp", "127.0.0.1"))) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(sip(b"CLOSE") + sip(b"A"))
            assert await read_closed(reader)

    run(scenario())


# -- stream limits ---------------------------------------------------------------------------


def test_tcp_slowloris_cut_off(run: Runner[None]) -> None:
    """SECURITY-CASES 6: a client trickling its headers is cut by the read deadline while a
    normal client on the same listener is served."""

    async def scenario() -> None:
        core = EchoCore()
        settings = make_settings(("tcp", "127.0.0.1"), read_deadline=0.5)
        async with serving(settings, core) as server:
            address = server.address_of("tcp")
            slow_reader, slow_writer = await connect(address)
            message = sip(b"SLOW")
            loop = asyncio.get_running_loop()
            started = loop.time()
            cut = False
            for index in range(len(message) - 1):  # never the last byte: never complete
                try:
                    slow_writer.write(message[index : index + 1])
                    await slow_writer.drain()
                except ConnectionError:
                    cut = True
                    break
                if index == 3:
                    # Meanwhile, a normal client is served.
                    reader, writer = await connect(address)
                    writer.write(sip(b"FAST"))
                    assert await reader.readline() == b"OK 1\r\n"
                    writer.close()
                if slow_reader.at_eof():
                    cut = True
                    break
                await asyncio.sleep(0.05)  # the attack's pace, not synchronisation
            assert cut or await read_closed(slow_reader)
            assert loop.time() - started < 0.5 + DEADLINE
            assert [m[0][:4] for m in core.received] == [b"FAST"]

    run(scenario())


def test_tcp_deadline_applies_to_the_next_pipelined_message(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        settings = make_settings(("tcp", "127.0.0.1"), read_deadline=0.3)
        async with serving(settings, core) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(sip(b"A") + b"INVITE sip:x SIP/2.0\r\nCall-")  # one and a half
            assert await reader.readline() == b"OK 1\r\n"
            assert await read_closed(reader)  # the half never completes
            assert len(core.received) == 1

    run(scenario())


def test_tcp_connection_cap_per_source(run: Runner[None]) -> None:
    async def scenario() -> None:
        observer = RecordingObserver()
        settings = make_settings(("tcp", "127.0.0.1"), max_connections_per_source=2)
        async with serving(settings, observer=observer) as server:
            address = server.address_of("tcp")
            kept = [await connect(address) for _ in range(2)]
            await until(lambda: len(observer.opened) == 2, "two connections")
            reader, _writer = await connect(address)
            assert await read_closed(reader)  # over the cap: cut at once
            assert len(observer.opened) == 2
            for reader, writer in kept:  # the others still work
                writer.write(sip(b"A"))
                assert (await reader.readline()).startswith(b"OK")
                writer.close()
            await until(lambda: len(server.dispatcher.streams) == 0, "connections gone")
            # Slots are given back: a new connection is accepted.
            reader, writer = await connect(address)
            writer.write(sip(b"A"))
            assert (await reader.readline()).startswith(b"OK")
            writer.close()

    run(scenario())


def test_tcp_total_connection_cap(run: Runner[None]) -> None:
    async def scenario() -> None:
        observer = RecordingObserver()
        settings = make_settings(("tcp", "127.0.0.1"), max_connections=1)
        async with serving(settings, observer=observer) as server:
            address = server.address_of("tcp")
            _kept = await connect(address)
            await until(lambda: len(observer.opened) == 1, "one connection")
            reader, _writer = await connect(address)
            assert await read_closed(reader)

    run(scenario())


def test_tcp_global_cap_keeps_a_reserve_for_whitelisted_sources(run: Runner[None]) -> None:
    """SECURITY-CASES 9: sources the `reserved` predicate does not name share the total cap
    minus the reserve (4 - max(1, min(2, 2)) = 2 here); a reserved source may still connect up
    to the full total."""

    async def scenario() -> None:
        observer = RecordingObserver()
        settings = make_settings(
            ("tcp", "127.0.0.1"), max_connections=4, max_connections_per_source=2
        )
        async with serving(settings, observer=observer) as server:
            streams = server.dispatcher.streams
            assert streams.limits.reserved_connections == 2
            streams.reserved = lambda ip: ip == "127.0.0.3"
            address = server.address_of("tcp")

            def from_(source: str) -> Awaitable[tuple[asyncio.StreamReader, Any]]:
                return connect(address, local_addr=(source, 0))

            strangers = [await from_("127.0.0.2") for _ in range(2)]
            await until(lambda: len(observer.opened) == 2, "the strangers' share")
            reader, _writer = await from_("127.0.0.4")  # another stranger: the share is used
            assert await read_closed(reader)
            trusted = [await from_("127.0.0.3") for _ in range(2)]  # up to the full total
            await until(lambda: len(observer.opened) == 4, "the reserve")
            for reader, writer in strangers + trusted:
                writer.write(sip(b"A"))
                assert (await reader.readline()).startswith(b"OK")
            assert streams.refused == 1
            # The reserve is given back when a reserved connection closes, and a stranger's
            # slot when a stranger's does: the classes never borrow from each other.
            trusted[0][1].close()
            await until(lambda: len(streams) == 3, "a trusted connection gone")
            reader, _writer = await from_("127.0.0.4")
            assert await read_closed(reader)
            strangers[0][1].close()
            await until(lambda: len(streams) == 2, "a stranger's connection gone")
            reader, writer = await from_("127.0.0.4")
            writer.write(sip(b"A"))
            assert (await reader.readline()).startswith(b"OK")

    run(scenario())


def test_tcp_no_reserve_without_reserved_sources(run: Runner[None]) -> None:
    """When the config names no address (predicate None) nobody could use a reserve: every
    source may take the whole total."""

    async def scenario() -> None:
        observer = RecordingObserver()
        settings = make_settings(("tcp", "127.0.0.1"), max_connections=2)
        async with serving(settings, observer=observer) as server:
            assert server.dispatcher.streams.reserved is None
            address = server.address_of("tcp")
            kept = [await connect(address, local_addr=("127.0.0.2", 0)) for _ in range(2)]
            await until(lambda: len(observer.opened) == 2, "both connections")
            for reader, writer in kept:
                writer.write(sip(b"A"))
                assert (await reader.readline()).startswith(b"OK")

    run(scenario())


def test_tcp_idle_timeout(run: Runner[None]) -> None:
    async def scenario() -> None:
        observer = RecordingObserver()
        settings = make_settings(("tcp", "127.0.0.1"), idle_timeout=0.3)
        async with serving(settings, observer=observer) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(sip(b"A"))
            assert await reader.readline() == b"OK 1\r\n"
            assert await read_closed(reader)
            await until(lambda: observer.closed == ["tcp"], "connection_closed")

    run(scenario())


def test_tcp_ipv6_listener(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        async with serving(make_settings(("tcp", "::1")), core) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(sip(b"A"))
            assert await reader.readline() == b"OK 1\r\n"
            assert core.received[0][1].host == "::1"
            writer.close()

    run(scenario())


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    chain, key = folder / "cert.pem", folder / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    return ca, chain, key


def tls_settings(
    certs: tuple[trustme.CA, Path, Path], handshake_timeout: float = 0.5, **limits: Any
) -> Settings:
    _ca, chain, key = certs
    tls = TlsSettings(
        certificate=str(chain), private_key=str(key), handshake_timeout=handshake_timeout
    )
    return make_settings(
        ("tls", "127.0.0.1"),
        tls=tls,
        **limits,
    )


def test_tls_handshake_and_message(run: Runner[None], certs: tuple[trustme.CA, Path, Path]) -> None:
    async def scenario() -> None:
        ca = certs[0]
        client = ssl.create_default_context()
        ca.configure_trust(client)
        core = EchoCore()
        async with serving(tls_settings(certs), core) as server:
            reader, writer = await connect(server.address_of("tls"), ssl=client)
            assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
            writer.write(sip(b"A") + b"\r\n\r\n")
            assert await reader.readline() == b"OK 1\r\n"
            assert await reader.readexactly(2) == b"\r\n"
            assert core.received[0][1].transport is Transport.TLS
            writer.close()

    run(scenario())


def test_tls_client_certificate_required(
    run: Runner[None], certs: tuple[trustme.CA, Path, Path], tmp_path: Path
) -> None:
    async def scenario() -> None:
        ca, chain, key = certs
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        settings = make_settings(
            ("tls", "127.0.0.1"),
            tls=TlsSettings(
                certificate=str(chain),
                private_key=str(key),
                ca_file=str(ca_file),
                verify_client=True,
            ),
        )
        async with serving(settings) as server:
            address = server.address_of("tls")
            anonymous = ssl.create_default_context()
            ca.configure_trust(anonymous)
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                # TLS 1.3 may finish the client's side before the server checks the client
                # certificate: the refusal then shows as a closed connection.
                reader, writer = await connect(address, ssl=anonymous)
                writer.write(sip(b"A"))
                assert await read_closed(reader)
                assert await reader.read() == b""
            known = ssl.create_default_context()
            ca.configure_trust(known)
            ca.issue_cert("pbx.sipguard.test").configure_cert(known)
            reader, writer = await connect(address, ssl=known)
            writer.write(sip(b"A"))
            assert await reader.readline() == b"OK 1\r\n"
            writer.close()

    run(scenario())


def test_tls_slowloris_half_record_cut_off(
    run: Runner[None], certs: tuple[trustme.CA, Path, Path]
) -> None:
    """A TLS record trickled byte by byte (no plaintext ever completes) meets the deadline."""

    async def scenario() -> None:
        ca = certs[0]
        context = ssl.create_default_context()
        ca.configure_trust(context)
        # The handshake by hand takes several turns of this loop, which also runs the server:
        # on a loaded machine more than the 0.5 s handshake_timeout, whose cut (at EOF the
        # handshake never ends) is not the one this test is about: the read deadline's is.
        settings = tls_settings(certs, handshake_timeout=DEADLINE, read_deadline=0.3)
        async with serving(settings) as server:
            address = server.address_of("tls")
            reader, writer = await connect(address)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname=address.host)
            while True:  # the handshake, by hand
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
                    flight = await asyncio.wait_for(reader.read(65536), DEADLINE)
                    assert flight, "the server closed the connection during the handshake"
                    incoming.write(flight)
            writer.write(outgoing.read())
            tls.write(sip(b"SLOW"))
            record = outgoing.read()
            cut = False
            for index in range(len(record) - 1):  # never the whole record
                if reader.at_eof():
                    cut = True
                    break
                try:
                    writer.write(record[index : index + 1])
                    await writer.drain()
                except ConnectionError:
                    cut = True
                    break
                await asyncio.sleep(0.02)  # the attack's pace, not synchronisation
            assert cut or await read_closed(reader)

    run(scenario())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_refused(run: Runner[None], certs: tuple[trustme.CA, Path, Path]) -> None:
    async def scenario() -> None:
        ca = certs[0]
        client = ssl.create_default_context()
        ca.configure_trust(client)
        client.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        client.maximum_version = ssl.TLSVersion.TLSv1_1
        with contextlib.suppress(ssl.SSLError):
            client.set_ciphers("DEFAULT:@SECLEVEL=0")
        async with serving(tls_settings(certs)) as server:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await connect(server.address_of("tls"), ssl=client)

    run(scenario())


def test_tls_handshake_timeout(run: Runner[None], certs: tuple[trustme.CA, Path, Path]) -> None:
    """SECURITY-CASES 9: a connection that never starts its handshake is closed."""

    async def scenario() -> None:
        async with serving(tls_settings(certs, max_connections_per_source=1)) as server:
            address = server.address_of("tls")
            reader, _writer = await connect(address)  # plain TCP: no ClientHello ever
            assert await read_closed(reader)
            await until(lambda: len(server.dispatcher.streams) == 0, "slot released")

    run(scenario())


def test_tls_half_open_counts_against_cap(
    run: Runner[None], certs: tuple[trustme.CA, Path, Path]
) -> None:
    async def scenario() -> None:
        settings = tls_settings(certs, max_connections_per_source=1)
        async with serving(settings) as server:
            address = server.address_of("tls")
            _silent = await connect(address)
            await until(lambda: len(server.dispatcher.streams) == 1, "handshaking connection")
            reader, _writer = await connect(address)
            assert await read_closed(reader)

    run(scenario())


# -- UDP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_datagram_replied(run: Runner[None], host: str) -> None:
    async def scenario() -> None:
        core = EchoCore()
        async with serving(make_settings(("udp", host)), core) as server:
            transport, client = await udp_client(server.address_of("udp"))
            transport.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
            assert await client.next() == b"OK 1\r\n"
            _data, source, local, connection = core.received[0]
            assert source.transport is Transport.UDP and source.host == host
            assert source.port == transport.get_extra_info("sockname")[1]
            assert local == server.address_of("udp") and connection is None
            transport.close()

    run(scenario())


def test_core_exception_does_not_stop_listener(run: Runner[None]) -> None:
    async def scenario() -> None:
        observer = RecordingObserver()
        settings = make_settings(("udp", "127.0.0.1"), ("tcp", "127.0.0.1"))
        async with serving(settings, observer=observer) as server:
            transport, client = await udp_client(server.address_of("udp"))
            transport.sendto(b"BOOM")
            transport.sendto(b"after")
            assert await client.next() == b"OK 2\r\n"
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(sip(b"BOOM") + sip(b"after"))
            assert await reader.readline() == b"OK 4\r\n"
            assert [type(e) for e in observer.bugs] == [RuntimeError, RuntimeError]
            assert server.dispatcher.bugs == 2
            writer.close()
            transport.close()

    run(scenario())


def test_udp_broadcast_destination_refused(run: Runner[None]) -> None:
    async def scenario() -> None:
        observer = RecordingObserver()
        async with serving(make_settings(("udp", "127.0.0.1")), observer=observer) as server:
            transport, client = await udp_client(server.address_of("udp"))
            transport.sendto(b"BCAST")
            transport.sendto(b"next")
            assert await client.next() == b"OK 2\r\n"
            assert server.dispatcher.refused_destinations == 1
            transport.close()

    run(scenario())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_forward_to_closed_port_fails_upstream(run: Runner[None], host: str) -> None:
    """ICMP port unreachable is mapped back to the Forward; the core answers the client."""

    async def scenario() -> None:
        core = EchoCore()
        core.upstream = Address(Transport.UDP, host, free_port(host))  # nobody listens
        async with serving(make_settings(("udp", host)), core) as server:
            transport, client = await udp_client(server.address_of("udp"))
            transport.sendto(b"FWD one")
            assert await client.next() == b"503\r\n"
            assert [f.data for f in core.failed] == [b"FWD one"]
            transport.close()

    run(scenario())


def test_udp_forward_and_response(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        loop = asyncio.get_running_loop()
        up_transport, upstream = await loop.create_datagram_endpoint(
            UdpClient, local_addr=("127.0.0.1", 0)
        )
        core.upstream = Address(
            Transport.UDP, "127.0.0.1", up_transport.get_extra_info("sockname")[1]
        )
        async with serving(make_settings(("udp", "127.0.0.1")), core) as server:
            transport, client = await udp_client(server.address_of("udp"))
            transport.sendto(b"FWD call")
            assert await upstream.next() == b"FWD call"
            listener = server.address_of("udp")
            up_transport.sendto(b"SIP/2.0 200 OK", (listener.host, listener.port))
            assert await client.next() == b"SIP/2.0 200 OK"
            assert core.received[1][1] == core.upstream
            transport.close()
        up_transport.close()

    run(scenario())


# -- outbound streams ------------------------------------------------------------------------


async def stream_upstream(
    answer: Callable[[bytes], Awaitable[bytes | None]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> tuple[asyncio.Server, list[bytes]]:
    """A TCP/TLS peer standing for the upstream: records what it gets, may answer."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                message = head + await reader.readexactly(length)
                got.append(message)
                if answer is not None:
                    reply = await answer(message)
                    if reply is not None:
                        writer.write(reply)
        writer.close()

    server = await asyncio.start_server(serve, host, 0, ssl=ssl_context)
    return server, got


async def answer_200(message: bytes) -> bytes:
    return b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_tcp_forward_opens_upstream_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        observer = RecordingObserver()
        upstream, got = await stream_upstream(answer_200)
        port = upstream.sockets[0].getsockname()[1]
        core.upstream = Address(Transport.TCP, "127.0.0.1", port)
        async with serving(make_settings(("tcp", "127.0.0.1")), core, observer) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(sip(b"FWD 1") + sip(b"FWD 2"))  # the second queues while connecting
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head.startswith(b"SIP/2.0 200 OK")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert [m[:5] for m in got] == [b"FWD 1", b"FWD 2"]
            # One outbound connection, reused; the answer came in through the core as from
            # the upstream.
            assert observer.opened == ["tcp", "tcp"]
            responses = [r for r in core.received if r[0].startswith(b"SIP/2.0")]
            assert responses[0][1] == core.upstream
            writer.close()
        upstream.close()

    run(scenario())


def test_tcp_upstream_refused_answers_503(run: Runner[None]) -> None:
    async def scenario() -> None:
        core = EchoCore()
        observer = RecordingObserver()
        core.upstream = Address(Transport.TCP, "127.0.0.1", free_port())  # nobody listens
        async with serving(make_settings(("tcp", "127.0.0.1")), core, observer) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(sip(b"FWD 1"))
            assert await reader.readline() == b"503\r\n"
            assert [f.data[:5] for f in core.failed] == [b"FWD 1"]
            assert observer.upstream_errors and observer.upstream_errors[0][0] == core.upstream
            await until(lambda: len(server.dispatcher.streams) == 1, "outbound entry freed")
            writer.close()

    run(scenario())


def test_tls_upstream_verified(run: Runner[None], certs: tuple[trustme.CA, Path, Path]) -> None:
    async def scenario() -> None:
        ca, chain, key = certs
        server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_side.load_cert_chain(str(chain), str(key))
        upstream, got = await stream_upstream(answer_200, server_side)
        port = upstream.sockets[0].getsockname()[1]
        core = EchoCore()
        core.upstream = Address(Transport.TLS, "127.0.0.1", port)
        from sipguard.transport.upstream import client_tls_context

        trusting = client_tls_context(ca_file=None)
        ca.configure_trust(trusting)
        async with serving(make_settings(("udp", "127.0.0.1")), core, client_tls=trusting) as srv:
            transport, client = await udp_client(srv.address_of("udp"))
            transport.sendto(sip(b"FWD tls"))
            assert (await client.next()).startswith(b"SIP/2.0 200 OK")
            assert got[0].startswith(b"FWD tls")
            transport.close()
        # Without trust in the CA, the handshake fails and the client gets its 503.
        core = EchoCore()
        core.upstream = Address(Transport.TLS, "127.0.0.1", port)
        distrusting = client_tls_context(ca_file=None)
        async with serving(
            make_settings(("udp", "127.0.0.1")), core, client_tls=distrusting
        ) as srv:
            transport, client = await udp_client(srv.address_of("udp"))
            transport.sendto(sip(b"FWD tls"))
            assert await client.next() == b"503\r\n"
            transport.close()
        upstream.close()

    run(scenario())


# -- ICMP for replies to vanished clients ----------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_reply_to_departed_udp_client_is_no_listener_error(run: Runner[None], host: str) -> None:
    """Issue 12 item 7: a client that leaves before its reply (ICMP port unreachable) is
    ordinary traffic: counted by reason and logged at debug with the peer, never an error."""

    async def scenario() -> None:
        out = io.BytesIO()
        metrics = Metrics()
        observer = Observer(metrics, configure_logging("debug", "json", out), None)
        async with serving(make_settings(("udp", host)), observer=observer) as server:
            listener = server.address_of("udp")
            with socket.socket(
                socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
            ) as client:
                client.bind((host, 0))
                port = client.getsockname()[1]
                client.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n", (listener.host, listener.port))
            # closed before the loop could even read the request: the reply meets no socket

            def lines() -> list[dict[str, Any]]:
                return [orjson.loads(x) for x in out.getvalue().splitlines()]

            def unreachable() -> bool:
                return any(x["event"] == "peer_unreachable" for x in lines())

            await until(unreachable, "the peer_unreachable line")
            line = next(x for x in lines() if x["event"] == "peer_unreachable")
            assert line["level"] == "debug"
            assert (line["src_ip"], line["src_port"]) == (host, port)
            assert line["reason"] == "port_unreachable"
            assert not [x for x in lines() if x["level"] == "error"], lines()
            scrape = metrics.scrape().decode()
            assert 'sipguard_peer_unreachable_total{reason="port_unreachable"} 1.0' in scrape
            # the listener serves the next client as before
            transport, client_protocol = await udp_client(listener)
            transport.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
            assert (await client_protocol.next()).startswith(b"OK")
            transport.close()

    run(scenario())


# -- wildcard listeners: IPv6-only, with IPv4 beside them ------------------------------------


def test_ipv6_wildcard_is_ipv6_only_and_ipv4_wildcard_shares_its_port(run: Runner[None]) -> None:
    """Issue 12 item 5: `[::]` receives IPv6 only (IPV6_V6ONLY, no IPv4-mapped peers ever reach
    the core); `0.0.0.0` on the same port is the IPv4 side, and both are served."""

    async def scenario() -> None:
        port = free_port("::1")
        core = EchoCore()
        only_v6 = replace(
            make_settings(),
            listen=(Listener("udp", "::", port), Listener("tcp", "::", port)),
        )
        async with serving(only_v6, core):
            # nobody serves IPv4 on that port: it is free to bind, and TCP is refused
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("127.0.0.1", port))
            with pytest.raises(ConnectionRefusedError):
                await connect(Address(Transport.TCP, "127.0.0.1", port))
            transport, client = await udp_client(Address(Transport.UDP, "::1", port))
            transport.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
            assert await client.next() == b"OK 1\r\n"
            transport.close()
        both = replace(
            only_v6,
            listen=(
                *only_v6.listen,
                Listener("udp", "0.0.0.0", port),
                Listener("tcp", "0.0.0.0", port),
            ),
        )
        core = EchoCore()
        async with serving(both, core):
            for host in ("::1", "127.0.0.1"):
                transport, client = await udp_client(Address(Transport.UDP, host, port))
                transport.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
                assert (await client.next()).startswith(b"OK")
                transport.close()
                reader, writer = await connect(Address(Transport.TCP, host, port))
                writer.write(sip(b"A"))
                assert (await reader.readline()).startswith(b"OK")
                writer.close()
            # each peer reached the core as itself, on the listener of its family
            seen = {(source.host, local.host) for _data, source, local, _c in core.received}
            assert seen == {("::1", "::"), ("127.0.0.1", "0.0.0.0")}

    run(scenario())


# -- framing errors: 400/513, then the connection closes -------------------------------------

FRAMING_HEAD = (
    b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-framing\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=f1\r\n"
    b"To: <sip:bot@127.0.0.1>\r\n"
    b"Call-ID: framing@client\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the peer sends until it closes (bounded by the deadline)."""
    chunks = []
    async with asyncio.timeout(DEADLINE):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_framing_error_answered_then_closed(run: Runner[None]) -> None:
    """Issue 12 item 9: the shell hands a lost framing to the core, sends what it answers, then
    closes; nothing of the stream reaches `handle`."""

    async def scenario() -> None:
        core = EchoCore()
        async with serving(make_settings(("tcp", "127.0.0.1")), core) as server:
            reader, writer = await connect(server.address_of("tcp"))
            writer.write(FRAMING_HEAD + b"Content-Length: 1 0\r\n\r\n" + sip(b"A"))
            assert await read_all(reader) == b"FRAMING 400\r\n"
            assert core.received == [] and [e.routable for e in core.framing_errors] == [True]

    run(scenario())


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_framing_error_from_the_real_core(
    run: Runner[None], certs: tuple[trustme.CA, Path, Path], kind: str
) -> None:
    """SECURITY-CASES 3 and 7 end to end: a malformed Content-Length gets 400, a body over the
    limit 513, each on its own connection, which then closes."""

    async def scenario() -> None:
        ca, chain, key = certs
        tls = TlsSettings(certificate=str(chain), private_key=str(key)) if kind == "tls" else None
        settings = replace(
            make_settings((kind, "127.0.0.1"), tls=tls),
            trunks=(Trunk("demo", whitelist=parse_rules(("127.0.0.1",))),),
        )
        core = Core(settings, nonce_key=b"k" * 32, boot_id=b"framing!")
        observer = RecordingObserver()
        client = ssl.create_default_context()
        ca.configure_trust(client)
        async with serving(settings, core, observer) as server:
            answers = []
            for length in (b"abc", b"99999999"):
                reader, writer = await connect(
                    server.address_of(kind), ssl=client if kind == "tls" else None
                )
                writer.write(FRAMING_HEAD + b"Content-Length: " + length + b"\r\n\r\n")
                answers.append(await read_all(reader))
                writer.close()
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [
            b"SIP/2.0 400 Bad Request",
            b"SIP/2.0 513 Message Too Large",
        ]
        assert all(b"Call-ID: framing@client\r\n" in a for a in answers)
        causes = [d.cause for d in observer.decisions]
        assert causes == [Cause.PARSE_ERROR, Cause.TOO_LARGE]

    run(scenario())
