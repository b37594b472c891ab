"""What the core answers to a message it could not read (RFC 3261 §8.2, §16.3; RFC 4475).

Owns: `Arrival` (where a message came from) and `answer_unreadable`: a `400`/`513` when a
reply can be routed (the request parsed far enough, or its headers were recovered), else a
`Drop`; never a reply to a response or an ACK, never one bigger than the datagram it answers to
a source no trunk admits (SECURITY-CASES 8).

Never does: I/O, count or log (the shell does, from the cause), parse again what failed.
"""

from __future__ import annotations

from typing import NamedTuple

from sipguard.errors import MessageTooLarge, ParseError
from sipguard.proxy.actions import Action, Address, Cause, Drop, Info, Reply
from sipguard.proxy.context import Config
from sipguard.proxy.via import tag_for
from sipguard.sip import Request, Response, build_error_response, build_response


class Arrival(NamedTuple):
    """Where a message came from: its source, the listener, the connection (None: a datagram),
    and whether the source is a configured upstream."""

    source: Address
    local: Address
    connection: int | None
    from_upstream: bool


def answer_unreadable(
    cfg: Config,
    branch_key: bytes,
    exc: ParseError,
    data: bytes,
    arrival: Arrival,
    msg: Request | Response | None = None,
) -> list[Action]:
    """A message we could not read: 400/513 when a reply can be routed (never to a stranger
    when it would be larger than what it sent, SECURITY-CASES 8), else silence; `msg`: what
    was parsed before a header read on demand failed."""
    source, local, connection, from_upstream = arrival
    cause = Cause.TOO_LARGE if isinstance(exc, MessageTooLarge) else Cause.PARSE_ERROR
    info = Info(status=exc.status, detail=exc.detail[:120])
    if isinstance(msg, Response):
        return [Drop(cause, info)]  # a broken response is never answered (RFC 4475 3.1.2.5)
    reply_data: bytes | None = None
    try:
        if isinstance(msg, Request):
            if msg.method == b"ACK":
                return [Drop(cause, info)]
            reply_data = build_response(
                msg,
                exc.status,
                exc.reason.encode("ascii"),
                to_tag=tag_for(branch_key, msg),
            )
        elif exc.routable:
            recovered = exc.headers
            if getattr(recovered, "method", b"ACK") == b"ACK":
                return [Drop(cause, info)]
            reply_data = build_error_response(exc, to_tag=b"sgerr")
    except ParseError:
        reply_data = None
    if reply_data is None:
        return [Drop(cause, info)]
    unknown = not from_upstream and not cfg.matcher.candidates(source.host)
    # No reply bigger than the request to an unverified source (SECURITY-CASES 8); a stream
    # peer's address was verified by its handshake.
    amplifies = connection is None and len(reply_data) > len(data)
    if unknown and (cfg.refuse_drop or amplifies):
        return [Drop(cause, info)]
    return [Reply(reply_data, source, local, connection, cause, info)]
