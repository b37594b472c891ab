"""The real SIPVicious tools (svwar, svcrack, svmap) against the running daemon on loopback.

Owns: the issue 7 acceptance tests with a real attacker: svwar cannot tell existing users from
unknown ones (SECURITY-CASES 26), svcrack is banned before it reaches the right password (the
`banned` event and the `sipguard_bans_active` gauge show it), svmap from a banned source or with
the scanner User-Agent gets no answer at all. Facts about the tools: docs/notes-sipvicious.md.

Must never: target anything but loopback; run a tool without its hard timeout (the helpers in
tests/integration/sipvicious.py kill it by PID); leave the daemon or SIPp running (fixtures).

sipvicious always sends `User-Agent: friendly-scanner` (hard-coded, no flag changes it; `-c`
omits it but also switches to compact headers), and the default `protection.scanner_user_agents`
drops that without an answer. Tests that need the tools to actually talk to the daemon (to show
that the ban, not the User-Agent, stops them) therefore configure `scanner_user_agents: []`.

RFC 3261 §22 (digest: the 401 every unauthenticated REGISTER gets), §8.2.6.2 (the From tag the
tools keep their state in is echoed), §11 (OPTIONS, svmap's probe).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness import PASSWORD, USER, V4
from tests.integration.sipvicious import run_svcrack, run_svmap, run_svwar
from tests.integration.test_protection import (
    ATTACKER,
    EdgeFactory,
    UdpPeer,
    assert_no_user_oracle,
    edge_factory,  # noqa: F401  (the fixture, shared with test_protection)
    get_banned,
)
from tests.sipclient import SipClient

pytest.importorskip("sipvicious", reason="sipvicious (the attacker) is not installed")

pytestmark = [pytest.mark.integration, pytest.mark.attack]

# The tools' User-Agent would be dropped by the default scanner list: see the module docstring.
NO_SCANNER_LIST: dict[str, Any] = {"scanner_user_agents": []}
EXTENSIONS = [USER, "100", "101", "bob", "admin", "1000"]  # alice first: see the svwar test
WRONG = ["123456", "password", "alice", "letmein", "qwerty", "000000", "secret"]
WORDS = [*WRONG, PASSWORD, "trustno1"]  # the right one in 8th place


def test_svwar_cannot_enumerate_users(edge_factory: EdgeFactory) -> None:  # noqa: F811
    edge = edge_factory(protection=NO_SCANNER_LIST)
    # Default mode: svwar probes a random extension first, gets the same 401 as for any user,
    # and gives up ("authentication request for an unknown extension").
    plain = run_svwar(V4, edge.port, dictionary=EXTENSIONS, source_ip=ATTACKER)
    assert plain.extensions == {}, plain.run.stdout
    assert plain.refused_unknown_check, plain.run.stderr
    # --force: the 401 to the random probe becomes the "no such user" fingerprint. svwar 0.3.8
    # then stops at the first extension whose answer equals it (a 401 is none of the "not
    # found" codes it knows: "We got an unknown response"), so alice goes first: her 401 is
    # the same as the random extension's, and she is not reported.
    before = len(edge.events("challenged", src_ip=ATTACKER))
    forced = run_svwar(V4, edge.port, dictionary=EXTENSIONS, force=True, source_ip=ATTACKER)
    assert not forced.run.timed_out, forced.run.stderr
    assert forced.extensions == {}, forced.run.stdout
    assert "found nothing" in forced.run.stderr, forced.run.stderr
    probes = len(edge.events("challenged", src_ip=ATTACKER)) - before
    assert probes >= 2, "svwar --force did not probe alice"  # the random one, then alice
    # And byte for byte, with our own requests from the same source.
    assert_no_user_oracle(edge, ATTACKER)


@pytest.mark.parametrize(
    "compact",
    [
        pytest.param(False, id="scanner-list-off"),
        # -c: compact header names and no User-Agent at all, which slips past the default
        # scanner list: the ban must stop it just the same (default protection settings).
        pytest.param(True, id="compact-default-config"),
    ],
)
def test_svcrack_banned_before_the_right_password(
    edge_factory: EdgeFactory,  # noqa: F811
    compact: bool,
) -> None:
    # ban_failures 5: the default.
    edge = edge_factory(protection=None if compact else NO_SCANNER_LIST, metrics=True)
    result = run_svcrack(
        V4, edge.port, username=USER, passwords=WORDS, source_ip=ATTACKER, compact=compact
    )
    assert result.passwords == {}, result.run.stdout + result.run.stderr
    assert result.run.returncode != 40, "svcrack reported a found password"
    assert not result.run.timed_out, result.run.stderr

    banned = edge.daemon.wait_event("banned", timeout=5.0, src_ip=ATTACKER)
    assert banned["failures"] == 5
    # Exactly five guesses were checked (words 1-5); the 8th never reached the verifier.
    failed = edge.events("auth_failed", src_ip=ATTACKER)
    assert [e["detail"] for e in failed] == ["wrong password"] * 5
    assert edge.events("admitted", src_ip=ATTACKER) == []
    assert "REGISTER" not in edge.uas.received()
    metrics = edge.metrics()
    assert metrics["sipguard_bans_active"] == 1
    assert metrics["sipguard_bans_total"] == 1
    # The ban is per source: alice on 127.0.0.1 registers as usual.
    with SipClient(*edge.target, "udp", timeout=3.0) as client:
        assert client.request_with_auth("REGISTER", edge.uri, USER, PASSWORD, "MD5").status == 200
    edge.uas.wait_received("REGISTER")


def test_svcrack_finds_the_password_when_not_banned(edge_factory: EdgeFactory) -> None:  # noqa: F811
    """Control for the test above: with ban_failures above the word count, the same run finds
    the password, so the ban (not a tool or digest mismatch) is what stopped it there."""
    edge = edge_factory(protection={**NO_SCANNER_LIST, "ban_failures": 20})
    result = run_svcrack(V4, edge.port, username=USER, passwords=WORDS, source_ip=ATTACKER)
    assert result.password == PASSWORD, result.run.stdout + result.run.stderr
    assert len(edge.events("auth_failed", src_ip=ATTACKER)) == len(WRONG)


def test_svmap_from_banned_source_gets_no_answer(edge_factory: EdgeFactory) -> None:  # noqa: F811
    edge = edge_factory(protection=NO_SCANNER_LIST)
    # Control: svmap from an unbanned source does find the daemon (its OPTIONS gets a 407).
    seen = run_svmap(V4, edge.port, source_ip=V4)
    assert list(seen.devices) == [f"{V4}:{edge.port}"], seen.run.stdout + seen.run.stderr
    get_banned(edge, ATTACKER)
    blind = run_svmap(V4, edge.port, source_ip=ATTACKER)
    assert not blind.run.timed_out
    assert blind.devices == {}, blind.run.stdout
    # Still banned, still silent; 127.0.0.1 is unaffected.
    with UdpPeer(ATTACKER, edge.target) as peer:
        assert peer.ping(timeout=0.5) is None
    with UdpPeer(V4, edge.target) as peer:
        pong = peer.ping()
        assert pong is not None and pong.status == 200


def test_scanner_user_agent_dropped_by_daemon(edge_factory: EdgeFactory) -> None:  # noqa: F811
    """The default scanner list, no ban: svmap from a whitelisted source finds nothing."""
    edge = edge_factory()
    blind = run_svmap(V4, edge.port, source_ip=V4)
    assert not blind.run.timed_out
    assert blind.devices == {}, blind.run.stdout
    assert edge.events("scanner_dropped", src_ip=V4), edge.daemon.describe()
    assert edge.events("banned") == []
