"""Every listener/upstream pair the config accepts carries a call: SIPp on both sides.

Owns: the contract that sipguard opens what it needs to reach its upstreams (issue 12 item 4): a
daemon with one listener only (UDP, TCP or TLS) in front of an upstream of each transport
(UDP, TCP, TLS) carries an authenticated call both ways: the INVITE transaction with its
challenge, and a BYE sent by the upstream back through sipguard (routed by our Record-Route,
the client's 200 back to the upstream). The TLS-only listener with a UDP upstream is the common
deployment (SIPS outside, UDP inside) that once answered every admitted request 503.

Debian's SIPp has no TLS: a TLS client is SIPp over TCP through `TlsBridge` (verifying our
certificate), a TLS upstream is a `TlsBridge` terminating TLS in front of a TCP SIPp UAS
(sipguard verifies its certificate against the trustme CA, `tls.ca_file`). A real TLS SIP client
(baresip) is in test_baresip_tls.py.
Must never: use a non-loopback address, sleep to synchronise, leave a process running.

RFC 3261 §16.6 (Via, Record-Route), §18.2.2 (responses over the connection or to the Via).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.harness import (
    V4,
    V6,
    Kind,
    Sipp,
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

pytestmark = pytest.mark.integration

TRANSPORTS = ("udp", "tcp", "tls")


def _sipp_transport(kind: str) -> SippTransport:
    return "u1" if kind == "udp" else "t1"


@contextlib.contextmanager
def _maybe(bridge: TlsBridge | None) -> Iterator[None]:
    try:
        yield
    finally:
        if bridge is not None:
            bridge.close()


@pytest.mark.parametrize("host", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize("upstream", TRANSPORTS)
@pytest.mark.parametrize("listener", TRANSPORTS)
def test_listener_reaches_upstream(
    sipp: Sipp,
    daemon_factory: DaemonFactory,
    tls_files: TlsFiles,
    listener: str,
    upstream: str,
    host: str,
) -> None:
    # The upstream: a SIPp UAS that answers the call and hangs up itself.
    uas_kind: Kind = "udp" if upstream == "udp" else "tcp"
    uas = sipp.start_uas("uas_sends_bye.xml", host, transport=_sipp_transport(uas_kind))
    terminator = None
    up_port = uas.port
    if upstream == "tls":
        terminator = TlsBridge(host, uas.port, None, server_context=tls_files.server_context())
        up_port = terminator.port
    with _maybe(terminator):
        port = free_port("udp" if listener == "udp" else "tcp", host)
        config = demo_config(
            listen=[f"{listener}://{hostport(host, port)}"],  # this one listener only
            upstream=[f"sip:{hostport(host, up_port)};transport={upstream}"],
            tls=tls_files,
        )
        config["tls"]["ca_file"] = str(tls_files.ca_cert)  # trust the test upstream's CA
        daemon = daemon_factory(config)
        bridge = None
        remote = hostport(host, port)
        if listener == "tls":
            bridge = TlsBridge(host, port, tls_files.client_context())
            remote = bridge.remote
        with _maybe(bridge):
            result = sipp.run(
                "uac_invite_bye_from_upstream.xml",
                remote,
                transport=_sipp_transport(listener),
                local_ip=host,
            )
            explain = result.explain() + "\n--- sipguard ---\n" + daemon.describe()
            if bridge is not None:
                explain += "\n" + "\n".join(bridge.errors)
            if terminator is not None:
                explain += "\n" + "\n".join(terminator.errors)
            assert result.ok, explain
        assert received_statuses(result.messages)[0] == 407, explain
        assert received_requests(result.messages) == ["BYE"], explain
        # The upstream saw the authenticated INVITE and its ACK (the challenge's ACK was
        # absorbed), then the client's 200 for its BYE came back to it.
        wait_for(lambda: received_statuses(uas.messages())[-1:] == [200], 5, "the 200 for the BYE")
        assert uas.received() == ["INVITE", "ACK"], uas.messages()
        assert daemon.find_event("upstream_error") is None, daemon.describe()
