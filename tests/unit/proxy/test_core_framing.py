"""Playbook tests of `Core.framing_error`: a stream whose framing failed (RFC 3261 §18.3) gets
the 400/513 SECURITY-CASES 3, 5 and 7 ask for when its headers could be read, else nothing.
The bytes go through the real `StreamFramer`, as the shell feeds them."""

from __future__ import annotations

import pytest

from sipguard.errors import ParseError
from sipguard.proxy.actions import Address, Cause, Drop, Reply, Transport
from sipguard.sip import Response, parse_message
from sipguard.sip.framing import StreamFramer
from tests.unit.proxy.playbook import NOW, core, digest_trunk, only, request, settings

CLIENT_TCP = Address(Transport.TCP, "127.0.0.1", 40000)
STRANGER_TCP = Address(Transport.TCP, "127.0.0.2", 40000)
LOCAL_TCP = Address(Transport.TCP, "127.0.0.1", 5060)
CONNECTION = 7


def framing_error(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as caught:
        StreamFramer().feed(data)
    return caught.value


def bad_length(value: str, method: str = "INVITE") -> bytes:
    return request(method).replace(b"Content-Length: 0", f"Content-Length: {value}".encode())


@pytest.mark.parametrize(
    ("data", "status", "cause"),
    [
        (bad_length("abc"), 400, Cause.PARSE_ERROR),  # SECURITY-CASES 3
        (bad_length("-1"), 400, Cause.PARSE_ERROR),
        (bad_length("0\r\nl: 0"), 400, Cause.PARSE_ERROR),  # SECURITY-CASES 4
        (request().replace(b"Content-Length: 0\r\n", b""), 400, Cause.PARSE_ERROR),  # case 5
        (bad_length("99999999"), 513, Cause.TOO_LARGE),  # SECURITY-CASES 7
    ],
    ids=["non-numeric", "negative", "duplicate", "missing", "body-too-large"],
)
def test_framing_error_answered(data: bytes, status: int, cause: Cause) -> None:
    error = framing_error(data)
    assert error.routable
    action = only(
        core(settings(digest_trunk())).framing_error(error, CLIENT_TCP, LOCAL_TCP, CONNECTION, NOW)
    )
    assert isinstance(action, Reply) and action.cause is cause
    assert (action.to, action.local, action.connection) == (CLIENT_TCP, LOCAL_TCP, CONNECTION)
    reply = parse_message(action.data)
    assert isinstance(reply, Response) and reply.status == status
    assert reply.call_id == b"call-1@client" and reply.top_via.branch == b"z9hG4bK-client-1"
    assert reply.to.tag  # RFC 3261 §8.2.6.2: our tag on a final response


def test_framing_error_to_a_stranger_over_a_stream_is_answered() -> None:
    """A stream peer's address is verified by its handshake: no amplification to fear."""
    error = framing_error(bad_length("abc"))
    action = only(
        core(settings(digest_trunk())).framing_error(
            error, STRANGER_TCP, LOCAL_TCP, CONNECTION, NOW
        )
    )
    assert isinstance(action, Reply)


def test_framing_error_stranger_silent_with_refuse_drop() -> None:
    error = framing_error(bad_length("abc"))
    s = settings(digest_trunk(), refuse="drop")
    action = only(core(s).framing_error(error, STRANGER_TCP, LOCAL_TCP, CONNECTION, NOW))
    assert isinstance(action, Drop) and action.cause is Cause.PARSE_ERROR


@pytest.mark.parametrize(
    "data",
    [
        b"INVITE sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * 70000,  # header section never ends
        bad_length("abc", method="ACK"),  # an ACK is never answered
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\nContent-Length: x\r\n\r\n",
    ],
    ids=["header-section-too-large", "ack", "response"],
)
def test_framing_error_without_an_answer_is_a_counted_drop(data: bytes) -> None:
    error = framing_error(data)
    action = only(
        core(settings(digest_trunk())).framing_error(error, CLIENT_TCP, LOCAL_TCP, CONNECTION, NOW)
    )
    assert isinstance(action, Drop)
    assert action.cause in (Cause.PARSE_ERROR, Cause.TOO_LARGE)
