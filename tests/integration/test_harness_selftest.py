"""Self-test of the real-peer harness, without sipguard: every UAC scenario against its UAS.

Owns: proof that the SIPp scenarios in tests/scenarios/ and the harness (ports, timeouts, stats,
message logs, the TLS bridge, certificates) work on this machine, so that a failure in
test_daemon_sipp.py points at the daemon. The challenge leg of the auth scenarios is stripped
(`direct_variant`); the digest itself is exercised against the daemon.
Must never: talk to anything but loopback; wait with fixed sleeps.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from tests.integration.harness import (
    REFUSED_V4,
    SCENARIOS,
    V4,
    V6,
    Daemon,
    HarnessError,
    Sipp,
    SippTransport,
    TlsBridge,
    TlsFiles,
    direct_variant,
    free_port,
    hostport,
    port_in_use,
    received_requests,
    received_statuses,
)

pytestmark = pytest.mark.integration

TRANSPORTS: list[tuple[SippTransport, str]] = [("u1", V4), ("t1", V4), ("u1", V6), ("t1", V6)]


def test_free_port_both_is_free_for_udp_and_tcp() -> None:
    port = free_port("both", V4)
    assert not port_in_use("udp", V4, port)
    assert not port_in_use("tcp", V4, port)


def test_free_port_refuses_non_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        free_port("udp", "192.0.2.1")


@pytest.mark.parametrize(("transport", "host"), TRANSPORTS)
def test_register_direct(sipp: Sipp, tmp_path: Path, transport: SippTransport, host: str) -> None:
    uas = sipp.start_uas("uas.xml", host, transport=transport)
    scenario = direct_variant(SCENARIOS / "uac_register_auth.xml", tmp_path)
    result = sipp.run(scenario, hostport(host, uas.port), transport=transport, local_ip=host)
    assert result.ok, result.explain()
    assert result.successful == 1
    assert received_statuses(result.messages) == [200]
    assert uas.wait_received("REGISTER") == ["REGISTER"]


@pytest.mark.parametrize(("transport", "host"), TRANSPORTS[:2])
def test_invite_call_direct(
    sipp: Sipp, tmp_path: Path, transport: SippTransport, host: str
) -> None:
    uas = sipp.start_uas("uas.xml", host, transport=transport)
    scenario = direct_variant(SCENARIOS / "uac_invite_auth.xml", tmp_path)
    result = sipp.run(scenario, hostport(host, uas.port), transport=transport, calls=3, rate=20)
    assert result.ok, result.explain()
    assert result.successful == 3
    assert uas.wait_received("BYE", 3).count("INVITE") == 3


def test_invite_cancel_direct(sipp: Sipp, tmp_path: Path) -> None:
    uas = sipp.start_uas("uas_ringing_cancel.xml")
    scenario = direct_variant(SCENARIOS / "uac_invite_cancel.xml", tmp_path)
    result = sipp.run(scenario, hostport(V4, uas.port))
    assert result.ok, result.explain()
    assert received_statuses(result.messages)[-2:] == [200, 487]
    assert uas.wait_received("ACK") == ["INVITE", "CANCEL", "ACK"]
    # RFC 3261 §9.1: the CANCEL and the ACK for the 487 reuse the INVITE's branch
    sent = [b for b in result.messages.split("branch=")[1:]]
    branches = {b.split("\n", 1)[0].split(";", 1)[0].strip() for b in sent}
    assert len(branches) == 1, branches


def test_bye_from_upstream_direct(sipp: Sipp, tmp_path: Path) -> None:
    uas = sipp.start_uas("uas_sends_bye.xml")
    scenario = direct_variant(SCENARIOS / "uac_invite_bye_from_upstream.xml", tmp_path)
    result = sipp.run(scenario, hostport(V4, uas.port))
    assert result.ok, result.explain()
    assert received_requests(result.messages) == ["BYE"]
    assert uas.wait_received("ACK") == ["INVITE", "ACK"]
    uas_log = uas.messages()
    assert "BYE sip:alice@127.0.0.1:" in uas_log  # Request-URI = the caller's Contact
    assert "SIP/2.0 200 OK" in result.messages


def test_forbidden_from_second_loopback_address(sipp: Sipp) -> None:
    uas = sipp.start_uas("uas_refuse.xml")
    result = sipp.run("uac_forbidden.xml", hostport(V4, uas.port), local_ip=REFUSED_V4)
    assert result.ok, result.explain()
    assert received_statuses(result.messages) == [403, 403]
    uas.wait_received("ACK")
    assert f"Via: SIP/2.0/UDP {REFUSED_V4}:" in uas.messages()


def test_expect_503_direct(sipp: Sipp, tmp_path: Path) -> None:
    refuse = (SCENARIOS / "uas_refuse.xml").read_text(encoding="iso-8859-1")
    uas_503 = tmp_path / "uas_503.xml"
    uas_503.write_text(
        refuse.replace("403 Forbidden", "503 Service Unavailable"), encoding="iso-8859-1"
    )
    uas = sipp.start_uas(uas_503)
    scenario = direct_variant(SCENARIOS / "uac_expect_503.xml", tmp_path)
    result = sipp.run(scenario, hostport(V4, uas.port))
    assert result.ok, result.explain()
    assert received_statuses(result.messages) == [503]


def test_wrong_answer_fails_the_run(sipp: Sipp) -> None:
    """Negative control: a 200 where 403 is expected must fail the SIPp run (exit 1)."""
    uas = sipp.start_uas("uas.xml")
    result = sipp.run("uac_forbidden.xml", hostport(V4, uas.port), recv_timeout_ms=1000)
    assert result.returncode == 1, result.explain()
    assert result.failed == 1


def test_no_answer_is_bounded(sipp: Sipp, tmp_path: Path) -> None:
    """Nobody listens: the run ends by -recv_timeout well within its bounds, as a failure."""
    port = free_port("udp", V4)
    scenario = direct_variant(SCENARIOS / "uac_register_auth.xml", tmp_path)
    result = sipp.run(scenario, hostport(V4, port), recv_timeout_ms=500, timeout_s=10)
    assert result.returncode == 1, result.explain()


def test_uas_logs_show_nothing_received(sipp: Sipp) -> None:
    uas = sipp.start_uas("uas.xml")
    assert uas.received() == []
    assert uas.stop() in (0, 1, -15, 143)


def test_tls_files_verify(tls_files: TlsFiles) -> None:
    ctx = tls_files.client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(tls_files.server_cert), str(tls_files.server_key))
    assert tls_files.server_key.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("host", [V4, V6])
def test_register_through_tls_bridge(sipp: Sipp, tls_files: TlsFiles, host: str) -> None:
    """SIPp (TCP) -> TlsBridge -> TLS terminator -> SIPp UAS (TCP): the bridge verifies the
    server certificate (trustme CA, IP SAN) and carries a full REGISTER transaction."""
    uas = sipp.start_uas("uas.xml", host, transport="t1")
    with (
        TlsBridge(host, uas.port, None, server_context=tls_files.server_context()) as terminator,
        TlsBridge(host, terminator.port, tls_files.client_context()) as bridge,
    ):
        scenario = direct_variant(SCENARIOS / "uac_register_auth.xml", sipp.workdir)
        result = sipp.run(scenario, bridge.remote, transport="t1", local_ip=host)
        assert result.ok, result.explain() + "\n" + "\n".join(bridge.errors + terminator.errors)
        assert bridge.handshakes >= 1
    assert uas.wait_received("REGISTER") == ["REGISTER"]


def test_tls_bridge_rejects_unknown_ca(tls_files: TlsFiles, tmp_path: Path) -> None:
    from tests.integration.harness import make_tls_files

    other = make_tls_files(tmp_path / "other")  # a different CA: verification must fail
    nowhere = free_port("tcp", V4)
    with (
        TlsBridge(V4, nowhere, None, server_context=tls_files.server_context()) as terminator,
        TlsBridge(V4, terminator.port, other.client_context()) as bridge,
        socket.create_connection((V4, bridge.port), timeout=5) as conn,
    ):
        conn.settimeout(5)
        assert conn.recv(1) == b""  # the bridge closes the plain side
        assert any("CERTIFICATE_VERIFY_FAILED" in e for e in bridge.errors), bridge.errors


def test_daemon_failure_is_reported(tmp_path: Path) -> None:
    """A daemon that exits before its started event raises, with its output attached."""
    daemon = Daemon(tmp_path, {"listen": ["bogus://nowhere"]})
    with pytest.raises(HarnessError, match="before it started"):
        daemon.start(timeout=20)
    assert not daemon.alive()
