"""Acceptance tests of the running daemon with real peers: SIPp as the client and the upstream.

Owns: the end-to-end contract of `sipguard run` (DESIGN.md §1, §4): digest-authenticated REGISTER
and calls pass over UDP, TCP and TLS on 127.0.0.1 and ::1; the 407's ACK is absorbed; in-dialog
requests from the upstream reach the client; CANCEL of a ringing INVITE; a source outside the
whitelist gets 403 and nothing reaches the upstream; transports can differ on the two sides; an
unreachable upstream gives 503; SIGTERM mid-call exits 0 within the grace period.
Must never: use a non-loopback address, sleep to synchronise, leave a process running.

RFC 3261: §10 and §22 (REGISTER, digest), §16 (proxying, Record-Route), §9 (CANCEL),
§17.1.1.3 (ACK for a non-2xx final response is hop-by-hop), §16.7 step 6 / §21.5.4 (503).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.harness import (
    REFUSED_V4,
    V4,
    V6,
    Daemon,
    Kind,
    Sipp,
    SippResult,
    SippServer,
    SippTransport,
    TlsBridge,
    TlsFiles,
    demo_config,
    free_port,
    hostport,
    received_requests,
    received_statuses,
)
from tests.polling import wait_for

pytest.importorskip("sipguard.server", reason="the daemon (sipguard/server.py) is not there yet")
pytest.importorskip("sipguard.config", reason="the daemon's config loader is not there yet")

pytestmark = pytest.mark.integration

SHUTDOWN_GRACE = 2.0  # seconds; the config below sets limits.shutdown_grace to this


@dataclass
class Stack:
    """sipguard on udp/tcp/tls x 127.0.0.1/::1, in front of one SIPp UAS."""

    daemon: Daemon
    uas: SippServer
    ports: dict[str, int]  # "v4" / "v6" (udp and tcp share it), "tls4" / "tls6"

    def remote(self, host: str, tls: bool = False) -> str:
        key = ("tls" if tls else "v") + ("6" if ":" in host else "4")
        return hostport(host, self.ports[key])


StackFactory = Callable[..., Stack]


@pytest.fixture
def stack_factory(
    sipp: Sipp, daemon_factory: DaemonFactory, tls_files: TlsFiles
) -> Iterator[StackFactory]:
    def make(
        uas_scenario: str = "uas.xml",
        upstream: SippTransport = "u1",
        *,
        upstream_down: bool = False,
    ) -> Stack:
        kind: Kind = "tcp" if upstream == "t1" else "udp"
        if upstream_down:
            up_port = free_port(kind, V4)  # nobody listens there
            uas = None
        else:
            uas = sipp.start_uas(uas_scenario, V4, transport=upstream)
            up_port = uas.port
        ports = {
            "v4": free_port("both", V4),
            "v6": free_port("both", V6),
            "tls4": free_port("tcp", V4),
            "tls6": free_port("tcp", V6),
        }
        listen = [
            f"udp://{V4}:{ports['v4']}",
            f"tcp://{V4}:{ports['v4']}",
            f"udp://[{V6}]:{ports['v6']}",
            f"tcp://[{V6}]:{ports['v6']}",
            f"tls://{V4}:{ports['tls4']}",
            f"tls://[{V6}]:{ports['tls6']}",
        ]
        config = demo_config(
            listen=listen,
            upstream=[f"sip:{hostport(V4, up_port)};transport={kind}"],
            tls=tls_files,
            extra={"limits": {"shutdown_grace": SHUTDOWN_GRACE}},
        )
        daemon = daemon_factory(config)
        return Stack(daemon, uas, ports)  # type: ignore[arg-type]  # uas None only when down

    yield make


def _assert_ok(result: SippResult, daemon: Daemon) -> None:
    assert result.ok, result.explain() + "\n--- sipguard ---\n" + daemon.describe()


@pytest.mark.parametrize("host", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_register_with_digest_reaches_upstream(
    stack_factory: StackFactory, sipp: Sipp, tls_files: TlsFiles, transport: str, host: str
) -> None:
    stack = stack_factory()
    sipp_transport: SippTransport = "u1" if transport == "udp" else "t1"
    if transport == "tls":
        # Debian's SIPp has no TLS: it speaks TCP to a bridge that verifies our certificate
        with TlsBridge(host, stack.ports["tls6" if ":" in host else "tls4"],
                       tls_files.client_context()) as bridge:  # fmt: skip
            result = sipp.run("uac_register_auth.xml", bridge.remote, transport="t1", local_ip=host)
            assert not bridge.errors, bridge.errors
    else:
        result = sipp.run(
            "uac_register_auth.xml", stack.remote(host), transport=sipp_transport, local_ip=host
        )
    _assert_ok(result, stack.daemon)
    assert received_statuses(result.messages) == [401, 200]
    # only the authenticated REGISTER is forwarded, without the credentials meant for us
    assert stack.uas.wait_received("REGISTER") == ["REGISTER"]
    assert "Authorization:" not in stack.uas.messages()


def test_invite_with_digest_full_call(stack_factory: StackFactory, sipp: Sipp) -> None:
    stack = stack_factory()
    result = sipp.run("uac_invite_auth.xml", stack.remote(V4))
    _assert_ok(result, stack.daemon)
    statuses = received_statuses(result.messages)
    assert statuses[0] == 407
    assert {180, 200} <= set(statuses[1:])
    # the first INVITE was challenged and its ACK absorbed: the upstream sees one of each
    assert stack.uas.wait_received("BYE") == ["INVITE", "ACK", "BYE"]
    assert "Proxy-Authorization:" not in stack.uas.messages()


def test_bye_from_upstream_reaches_client(stack_factory: StackFactory, sipp: Sipp) -> None:
    stack = stack_factory("uas_sends_bye.xml")
    result = sipp.run("uac_invite_bye_from_upstream.xml", stack.remote(V4))
    _assert_ok(result, stack.daemon)
    assert received_requests(result.messages) == ["BYE"]
    # the client's 200 for the BYE travels back to the upstream
    wait_for(
        lambda: received_statuses(stack.uas.messages())[-1:] == [200], 5, "the 200 for the BYE"
    )
    assert stack.uas.received() == ["INVITE", "ACK"]


def test_cancel_ringing_invite(stack_factory: StackFactory, sipp: Sipp) -> None:
    stack = stack_factory("uas_ringing_cancel.xml")
    result = sipp.run("uac_invite_cancel.xml", stack.remote(V4))
    _assert_ok(result, stack.daemon)
    assert received_statuses(result.messages)[-2:] == [200, 487]
    assert stack.uas.wait_received("ACK") == ["INVITE", "CANCEL", "ACK"]


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_source_outside_whitelist_gets_403_and_upstream_sees_nothing(
    stack_factory: StackFactory, sipp: Sipp, transport: SippTransport
) -> None:
    stack = stack_factory()
    refused = sipp.run(
        "uac_forbidden.xml", stack.remote(V4), transport=transport, local_ip=REFUSED_V4
    )
    _assert_ok(refused, stack.daemon)
    assert received_statuses(refused.messages) == [403, 403]
    # barrier: a whitelisted REGISTER afterwards is the first thing the upstream receives
    allowed = sipp.run("uac_register_auth.xml", stack.remote(V4), transport=transport)
    _assert_ok(allowed, stack.daemon)
    assert stack.uas.wait_received("REGISTER") == ["REGISTER"]
    assert REFUSED_V4 not in stack.uas.messages()


@pytest.mark.parametrize(("client", "upstream"), [("u1", "t1"), ("t1", "u1")])
def test_transport_differs_between_client_and_upstream(
    stack_factory: StackFactory, sipp: Sipp, client: SippTransport, upstream: SippTransport
) -> None:
    stack = stack_factory("uas.xml", upstream)
    result = sipp.run("uac_invite_auth.xml", stack.remote(V4), transport=client)
    _assert_ok(result, stack.daemon)
    assert stack.uas.wait_received("BYE") == ["INVITE", "ACK", "BYE"]


@pytest.mark.parametrize("upstream", ["u1", "t1"])
def test_upstream_down_gives_503(
    stack_factory: StackFactory, sipp: Sipp, upstream: SippTransport
) -> None:
    stack = stack_factory(upstream=upstream, upstream_down=True)
    result = sipp.run("uac_expect_503.xml", stack.remote(V4), recv_timeout_ms=10000)
    _assert_ok(result, stack.daemon)
    assert received_statuses(result.messages)[0] == 401
    assert received_statuses(result.messages)[-1] == 503


def test_sigterm_during_call_exits_zero_within_grace(
    stack_factory: StackFactory, sipp: Sipp
) -> None:
    stack = stack_factory()
    results: list[SippResult] = []
    # pause 3 s between ACK and BYE: the call is up when SIGTERM arrives
    caller = threading.Thread(
        target=lambda: results.append(
            sipp.run(
                "uac_invite_auth.xml",
                stack.remote(V4),
                pause_ms=3000,
                recv_timeout_ms=1000,
                timeout_s=15,
            )
        )
    )
    caller.start()
    try:
        stack.uas.wait_received("ACK", timeout=10)
        code = stack.daemon.stop(signal.SIGTERM, timeout=SHUTDOWN_GRACE + 3)
        assert code == 0, stack.daemon.describe()
    finally:
        caller.join(30)
    assert not caller.is_alive()
