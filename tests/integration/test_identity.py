"""Acceptance tests of issue 16 with real peers: SIPp as the client and as the upstream.

Owns: the end-to-end contract of tenant identity: a call admitted by digest reaches the
upstream with trunk, user, auth method, attribute headers and a signature that
`sipguard verify-identity` accepts (and refuses once a covered header changed or max_age
passed); a signing-key rotation keeps older signatures verifiable; forged identity headers
(our prefix in any case, folded, oddly spaced, repeated; P-Asserted-Identity and the
`strip_inbound` list) never reach the upstream; credential rotation: an old and a new password
both register, and once the old one's `valid_until` has passed it is refused byte for byte like
a wrong one (To-tag aside).
Must never: use a non-loopback address, sleep to synchronise, leave a process running.

RFC 3261 §7.3.1 (folding, whitespace before the colon), §16.6 (request forwarding), §22.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.harness import (
    PASSWORD,
    V4,
    Daemon,
    Sipp,
    SippResult,
    SippServer,
    demo_config,
    free_port,
    hostport,
    received_statuses,
)
from tests.integration.test_operate import reload, write_config
from tests.polling import wait_for

pytestmark = pytest.mark.integration

ATTRIBUTES = {"org_id": "8d1c5e0a", "plan": "gold"}
KEYS = {"k1": "k1-secret-0123456789abcdef", "k2": "k2-secret-fedcba9876543210"}
OLD_PASSWORD = "old-s3cret"
NEW_PASSWORD = "new-s3cret"
_LOG_BLOCK = re.compile(rb"^-{20,} [^\n]*\n", re.M)
_RECEIVED = re.compile(rb"message received \[(\d+)\] bytes :\n\n")


def received_messages(log: bytes, first_line: bytes) -> list[bytes]:
    """The exact bytes of every message a SIPp -trace_msg log shows as received whose start
    line begins with `first_line` (b"INVITE ", b"SIP/2.0 403")."""
    out = []
    for block in _LOG_BLOCK.split(log):
        m = _RECEIVED.search(block)
        if m is not None:
            message = block[m.end() : m.end() + int(m.group(1))]
            if message.startswith(first_line):
                out.append(message)
    return out


def header_lines(message: bytes) -> list[bytes]:
    head = message.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")[1:]


def verify_cli(config: Path, message: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sipguard", "verify-identity", "--config", str(config), *extra],
        input=message,
        capture_output=True,
        timeout=30,
        check=False,
    )


@dataclass
class Stack:
    daemon: Daemon
    uas: SippServer
    port: int
    config: dict[str, Any]

    @property
    def remote(self) -> str:
        return hostport(V4, self.port)

    def invites(self) -> list[bytes]:
        return received_messages((self.uas.workdir / "messages.log").read_bytes(), b"INVITE ")


StackFactory = Callable[..., Stack]


@pytest.fixture
def stack_factory(
    sipp: Sipp, daemon_factory: DaemonFactory, tmp_path: Path
) -> Iterator[StackFactory]:
    for key_id, secret in KEYS.items():
        (tmp_path / f"identity-{key_id}.key").write_text(secret)

    def make(
        *,
        identity: bool = True,
        signing_keys: tuple[str, ...] = ("k1",),
        credentials: list[dict[str, Any]] | None = None,
    ) -> Stack:
        uas = sipp.start_uas("uas.xml", V4)
        port = free_port("both", V4)
        config = demo_config(
            listen=[f"udp://{V4}:{port}"], upstream=[f"sip:{hostport(V4, uas.port)};transport=udp"]
        )
        trunk = config["trunks"][0]
        trunk["attributes"] = dict(ATTRIBUTES)
        if credentials is not None:
            trunk["credentials"] = credentials
        if identity:
            config["identity"] = identity_section(tmp_path, signing_keys)
        return Stack(daemon_factory(config), uas, port, config)

    yield make


def identity_section(directory: Path, signing_keys: tuple[str, ...]) -> dict[str, Any]:
    return {
        "header_prefix": "X-Sipguard-",
        "signing_keys": [
            {"id": k, "secret_file": str(directory / f"identity-{k}.key")} for k in signing_keys
        ],
        "max_age": 30,
        "strip_inbound": ["P-Asserted-Identity", "P-Preferred-Identity", "X-Forwarded-For"],
    }


def _assert_ok(result: SippResult, daemon: Daemon) -> None:
    assert result.ok, result.explain() + "\n--- sipguard ---\n" + daemon.describe()


def call(stack: Stack, sipp: Sipp, extra: str = "", local_port: int | None = None) -> bytes:
    """One digest-authenticated call; the INVITE the upstream received."""
    before = len(stack.invites())
    result = sipp.run(
        "uac_invite_auth_extra.xml", stack.remote, keys={"extra": extra}, local_port=local_port
    )
    _assert_ok(result, stack.daemon)
    invites = wait_for(lambda: stack.invites()[before:] or None, 5, "the INVITE upstream")
    assert len(invites) == 1
    return invites[0]


# --------------------------------------------------------------------------- signed identity


def test_digest_call_reaches_upstream_signed_and_verifiable(
    stack_factory: StackFactory, sipp: Sipp
) -> None:
    stack = stack_factory()
    client_port = free_port("udp", V4)
    invite = call(stack, sipp, local_port=client_port)
    lines = header_lines(invite)
    for line in (
        b"X-Sipguard-Trunk: demo",
        b"X-Sipguard-User: alice",
        b"X-Sipguard-Auth: digest",
        b"X-Sipguard-Attr-Org-Id: 8d1c5e0a",
        b"X-Sipguard-Attr-Plan: gold",
        b"X-Sipguard-Source: 127.0.0.1:%d" % client_port,
    ):
        assert lines.count(line) == 1, (line, invite)
    signatures = [x for x in lines if x.startswith(b"X-Sipguard-Identity: v=1;kid=k1;ts=")]
    assert len(signatures) == 1, invite

    config = stack.daemon.config_path
    done = verify_cli(config, invite)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"valid"
    # bare LF line ends, as a message pasted into a file, verify too
    assert verify_cli(config, invite.replace(b"\r\n", b"\n")).returncode == 0

    call_id = next(x for x in lines if x.startswith(b"Call-ID: "))
    cseq = next(x for x in lines if x.startswith(b"CSeq: "))
    for old, new in [
        (call_id, call_id + b"x"),
        (cseq, cseq.replace(b"2 INVITE", b"3 INVITE")),
        (b";tag=", b";tag=x"),
        (b"X-Sipguard-Trunk: demo", b"X-Sipguard-Trunk: other"),
        (b"X-Sipguard-User: alice", b"X-Sipguard-User: bob"),
        (b"X-Sipguard-Auth: digest", b"X-Sipguard-Auth: ip"),
        (b"X-Sipguard-Attr-Org-Id: 8d1c5e0a", b"X-Sipguard-Attr-Org-Id: 8d1c5e0b"),
        (b"X-Sipguard-Attr-Plan: gold", b"X-Sipguard-Attr-Plan: gold\r\nX-Sipguard-Attr-X: 1"),
        (b"X-Sipguard-Source: 127.0.0.1:", b"X-Sipguard-Source: 127.0.0.2:"),
    ]:
        assert old in invite
        done = verify_cli(config, invite.replace(old, new, 1))
        assert done.returncode == 1, (old, new)
        assert b"does not match" in done.stderr, done.stderr

    # after max_age (here 1 s) the same message is refused as expired
    def expired() -> bool:
        done = verify_cli(config, invite, "--max-age", "1")
        return done.returncode == 1 and b"older than max_age" in done.stderr

    wait_for(expired, 10, "the signature to expire", interval=0.2)


def test_signing_key_rotation_keeps_previous_signatures_verifiable(
    stack_factory: StackFactory, sipp: Sipp, tmp_path: Path
) -> None:
    stack = stack_factory(signing_keys=("k1",))
    before = call(stack, sipp)
    assert b";kid=k1;" in before
    # rotation: the new key first, the previous one still listed
    stack.config["identity"] = identity_section(tmp_path, ("k2", "k1"))
    write_config(stack.daemon, stack.config)
    reload(stack.daemon, "config_reloaded")
    after = call(stack, sipp)
    assert b";kid=k2;" in after
    config = stack.daemon.config_path
    for message in (before, after):
        done = verify_cli(config, message)
        assert done.returncode == 0, done.stderr
    # once k1 is removed, what it signed no longer verifies
    stack.config["identity"] = identity_section(tmp_path, ("k2",))
    write_config(stack.daemon, stack.config)
    done = verify_cli(config, before)
    assert done.returncode == 1 and b"unknown key" in done.stderr
    assert verify_cli(config, after).returncode == 0


# --------------------------------------------------------------------------- forged headers

FORGED = {
    "trunk": "\r\nX-Sipguard-Trunk: other",
    "attribute_lowercase": "\r\nx-sipguard-attr-org-id: forged-org",
    "p_asserted_identity": "\r\nP-Asserted-Identity: <sip:forged-ceo@platform.example>",
    "folded_trunk": "\r\nX-Sipguard-Trunk:\r\n other",
    "folded_attribute": "\r\nx-sipguard-attr-org-id:\r\n\tforged-org",
    "folded_p_asserted_identity": "\r\nP-Asserted-Identity:\r\n <sip:forged-ceo@platform.example>",
    "space_before_colon": "\r\nX-SIPGUARD-TRUNK   :   other",
    "tab_before_colon": "\r\nx-sipguard-attr-org-id\t: forged-org",
    "repeated": "\r\nX-Sipguard-Trunk: other\r\nX-Sipguard-Trunk: other2\r\n"
    "X-Sipguard-Identity: v=1;kid=k1;ts=1;mac=" + "0" * 64,
    "user_and_auth": "\r\nX-Sipguard-User: forged-boss\r\nx-SipGuard-AUTH: ip",
    "strip_inbound": "\r\nX-Forwarded-For: 198.51.100.7\r\nP-Preferred-Identity: <sip:forged@x>",
}
FORGED_VALUES = (b"other", b"forged", b"198.51.100.7", b"kid=k1;ts=1;")


@pytest.mark.parametrize("form", FORGED.keys())
def test_forged_identity_headers_never_reach_upstream(
    stack_factory: StackFactory, sipp: Sipp, form: str
) -> None:
    stack = stack_factory()
    invite = call(stack, sipp, FORGED[form])
    for value in FORGED_VALUES:
        assert value not in invite, (value, invite)
    lines = header_lines(invite)
    assert not any(x.lower().startswith(b"p-asserted-identity") for x in lines)
    assert [x for x in lines if x.lower().startswith(b"x-sipguard-trunk")] == [
        b"X-Sipguard-Trunk: demo"
    ]
    assert [x for x in lines if x.lower().startswith(b"x-sipguard-attr-org-id")] == [
        b"X-Sipguard-Attr-Org-Id: 8d1c5e0a"
    ]
    done = verify_cli(stack.daemon.config_path, invite)
    assert done.returncode == 0, done.stderr


def test_forged_headers_stripped_without_identity_section(
    stack_factory: StackFactory, sipp: Sipp
) -> None:
    """Without an `identity` section the plain headers stay as before (and the attributes
    come along), unsigned; our prefix and P-Asserted-Identity are still stripped."""
    stack = stack_factory(identity=False)
    invite = call(stack, sipp, FORGED["folded_trunk"] + FORGED["p_asserted_identity"])
    lines = header_lines(invite)
    ours = [x for x in lines if x.lower().startswith(b"x-sipguard-")]
    assert ours == [
        b"X-Sipguard-Trunk: demo",
        b"X-Sipguard-User: alice",
        b"X-Sipguard-Attr-Org-Id: 8d1c5e0a",
        b"X-Sipguard-Attr-Plan: gold",
    ]
    assert b"forged" not in invite


# --------------------------------------------------------------------------- credential rotation


def _register(stack: Stack, sipp: Sipp, password: str) -> SippResult:
    return sipp.run("uac_register_auth.xml", stack.remote, auth_pass=password)


def _refused(stack: Stack, sipp: Sipp, password: str, port: int) -> bytes:
    """A REGISTER with `password` that must be refused; the 403 it got, as received."""
    result = sipp.run(
        "uac_register_refused.xml",
        stack.remote,
        auth_pass=password,
        keys={"tag": "rot1", "br": "rotation"},
        local_port=port,
        extra=["-cid_str", "rotation-test@%s"],
    )
    _assert_ok(result, stack.daemon)
    assert received_statuses(result.messages) == [401, 403]
    replies = received_messages((result.workdir / "messages.log").read_bytes(), b"SIP/2.0 403")
    assert len(replies) == 1
    return replies[0]


def test_credential_rotation_old_and_new_then_only_new(
    stack_factory: StackFactory, sipp: Sipp
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    credentials = [
        {"username": "alice", "password": OLD_PASSWORD, "valid_until": soon.isoformat()},
        {"username": "alice", "password": NEW_PASSWORD},
    ]
    stack = stack_factory(credentials=credentials)
    # during the rotation both passwords work
    _assert_ok(_register(stack, sipp, OLD_PASSWORD), stack.daemon)
    _assert_ok(_register(stack, sipp, NEW_PASSWORD), stack.daemon)

    # the old password's valid_until has passed
    past = datetime.now(UTC) - timedelta(minutes=1)
    credentials[0]["valid_until"] = past.isoformat()
    write_config(stack.daemon, stack.config)
    reload(stack.daemon, "config_reloaded")
    _assert_ok(_register(stack, sipp, NEW_PASSWORD), stack.daemon)
    port = free_port("udp", V4)
    expired = _refused(stack, sipp, OLD_PASSWORD, port)
    wrong = _refused(stack, sipp, PASSWORD + "-wrong", port)
    to_tag = re.compile(rb"(\r\nTo:[^\r]*;tag=)[^;\r]*")
    assert to_tag.search(expired) is not None
    assert to_tag.sub(rb"\1X", expired) == to_tag.sub(rb"\1X", wrong), (expired, wrong)
    # the operator is told about the expired secret's user only when no secret is left
    check = subprocess.run(
        [sys.executable, "-m", "sipguard", "check-config", str(stack.daemon.config_path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert b"every secret" not in check.stderr
