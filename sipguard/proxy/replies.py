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
from sipguard.proxy.via import tag_for
from sipguard.sip import build_response, parse_credentials

RETRY_AFTER = b"5"  # seconds, in 503 for the rate limit and an unreachable upstream
CREDENTIAL_KEYS = frozenset({b"authorization", b"proxy-authorization"})


def text(value: bytes) -> str:
    return value.decode("latin-1")


def is_our_credential(value: bytes, realm: str) -> bool:
    """An Authorization / Proxy-Authorization value holding a digest answer for our realm."""
    try:
        credentials = parse_credentials(value)
    except ParseError:
        return False
    return credentials.is_digest and credentials.params.get("realm") == realm


def reply(
    ctx: Context,
    status: int,
    reason: bytes,
    cause: Cause,
    info: Info,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> Reply:
    """A response to the request of `ctx`, back where it came from."""
    msg = ctx.msg
    data = build_response(
        msg, status, reason, to_tag=tag_for(ctx.st.branch_key, msg), extra_headers=extra
    )
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
