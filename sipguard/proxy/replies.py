"""The replies sipguard builds itself, and the names both admission and forwarding use.

Owns: a reply to the request being decided (`reply`), the refusal (`refuse`: 403 or silence,
never larger than the request: SECURITY-CASES 8), the rate-limit answer (`rate_limited`: 503 with
Retry-After, RFC 3261 §21.5.4), which credential headers are ours (RFC 3261 §22.2, §22.3), and
the source address as bans, rates and dialogs know it.

Never does: decide whether to reply (admission does), forward (forwarding does), I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from sipguard.errors import ParseError
from sipguard.proxy.actions import Action, Cause, Drop, Info, Reply
from sipguard.proxy.context import Context
from sipguard.proxy.via import single_via, tag_for
from sipguard.sip import build_response, parse_credentials

RETRY_AFTER = b"5"  # seconds, in 503 for the rate limit and an unreachable upstream
CREDENTIAL_KEYS = frozenset({b"authorization", b"proxy-authorization"})
# What ends every reply we build: no body (RFC 3261 §20.14), then the empty line.
TRAILER = b"Content-Length: 0\r\n\r\n"


def text(value: bytes) -> str:
    return value.decode("latin-1")


def is_our_credential(value: bytes, realm: str) -> bool:
    """An Authorization / Proxy-Authorization value holding a digest answer for our realm."""
    try:
        credentials = parse_credentials(value)
    except ParseError:
        return False
    # another scheme has no params (`parse_credentials`): its realm is None, never ours
    return credentials.params.get("realm") == realm


def reply(
    ctx: Context,
    status: int,
    reason: bytes,
    cause: Cause,
    info: Info,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> Reply:
    """A response to the request of `ctx`, back where it came from."""
    lines = b"".join([name + b": " + value + b"\r\n" for name, value in extra]) if extra else b""
    return sent(ctx, head(ctx, status, reason) + lines + TRAILER, status, cause, info)


def head(ctx: Context, status: int, reason: bytes) -> bytes:
    """The start of a response to the request of `ctx` (RFC 3261 §8.2.6.2): the status line,
    every Via, From, To (with our tag when it has none), Call-ID and CSeq, each line ending
    CRLF; the caller adds its own lines and `TRAILER`.

    A request read on the parser's fast path with one Via value gives these lines from the
    values the parser matched (no header index, no line objects), in its own spelling and
    order of names as `build_response` writes them: the same bytes (tests compare the two).
    Any other request is written by `build_response`."""
    msg = ctx.msg
    tag = tag_for(ctx.st.branch_key, msg)
    if not single_via(msg):
        return build_response(msg, status, reason, to_tag=tag)[: -len(TRAILER)]
    to = msg.to
    m = msg.fast_match
    assert m is not None  # `single_via`: read on the fast path
    return b"SIP/2.0 %d %s\r\nVia: %s\r\nFrom: %s\r\nTo: %s%s\r\nCall-ID: %s\r\nCSeq: %s\r\n" % (
        status,
        reason,
        msg.top_via.raw,
        msg.from_.raw,
        to.raw,
        b"" if to.tag is not None else b";tag=" + tag,
        msg.call_id,
        msg.raw[m.start("cn") : m.end("cm")],
    )


def sent(ctx: Context, data: bytes, status: int, cause: Cause, info: Info) -> Reply:
    """`data`, a response to the request of `ctx` with this status, back where it came from."""
    info = Info(info.method, info.call_id, info.trunk, info.user, status, info.detail)
    return Reply(data, ctx.source, ctx.local, ctx.connection, cause, info)


def rate_limited(ctx: Context, info: Info) -> list[Action]:
    if ctx.cfg.rate_drop:
        return [Drop(Cause.RATE_LIMITED, info)]
    extra = ((b"Retry-After", RETRY_AFTER),)
    return [reply(ctx, 503, b"Service Unavailable", Cause.RATE_LIMITED, info, extra)]


def refuse(ctx: Context, cause: Cause, info: Info, *, counted: bool = False) -> list[Action]:
    """`403 Forbidden` or silence (auth.refuse), never larger than the request. `counted`: the
    guard already counted this request (a failure), so the rate limit is not asked again."""
    if ctx.cfg.refuse_drop:
        return [Drop(cause, info)]
    if not counted and not ctx.st.guard.allow_request(ctx.ip, ctx.now):
        return [Drop(Cause.RATE_LIMITED, info)]
    answer = reply(ctx, 403, b"Forbidden", cause, info)
    if len(answer.data) > len(ctx.msg.raw):
        return [Drop(cause, info)]
    return [answer]
