"""Per-trunk limits in the proxy (issue 17): where admission asks the trunk's limiter, and where
the life of a call reaches it.

Owns: `check` (a new INVITE or REGISTER, its trunk known, against that trunk's limits: None to
go on, or the `503` that refuses it), the reason phrases of those 503s, and telling the limiter
(`policy.limits.TrunkLimiter`, kept in `State`) how each counted call goes on: the upstream's
2xx to its INVITE (`answered`), a final non-2xx or the caller's CANCEL (`failed`), a BYE from
either side (`ended`).

Never does: count or time anything itself (the limiter does, given `now`), I/O. Only what
sipguard can trust moves a count: responses from the upstream that it relays, a CANCEL that
matches an INVITE it admitted from that source, a BYE of a dialog it admitted from that source
or one from the upstream. A peer cannot free a slot of its trunk with a forged response.

RFC 3261: §21.5.4 (503), §20.33 (Retry-After), §12 (a dialog: Call-ID and tags), §13.2.2.4
(the 2xx), §9 (CANCEL), §15 (BYE).
"""

from __future__ import annotations

from sipguard.policy.limits import DialogKey, LimitVerdict
from sipguard.proxy.actions import Action, Cause, Info
from sipguard.proxy.context import Admitted, Context, State
from sipguard.proxy.replies import reply
from sipguard.sip import Request, Response

# The reason phrase says which limit refused (README: why 503, not 486/480).
REASONS: dict[LimitVerdict, bytes] = {
    LimitVerdict.CALLS_PER_SECOND: b"Call Rate Limit Exceeded",
    LimitVerdict.REGISTRATIONS_PER_SECOND: b"Registration Rate Limit Exceeded",
    LimitVerdict.CONCURRENT_CALLS: b"Concurrent Call Limit Reached",
}


def caller_key(msg: Request | Response) -> DialogKey:
    """The call as its caller named it: for the INVITE, its CANCEL and their responses, the
    From-tag is the caller's."""
    return DialogKey(msg.call_id, msg.from_.tag or b"")


def check(ctx: Context, admitted: Admitted) -> list[Action] | None:
    """A new request admitted for `admitted.info.trunk`: over one of the trunk's limits, the
    503 that refuses it; else None. Only an INVITE without a To-tag (a new call) and a REGISTER
    are limited."""
    msg, info = ctx.msg, admitted.info
    limiter = ctx.st.limiter
    if msg.method == b"INVITE" and not msg.to.tag:
        branch = msg.top_via.branch or b""
        decision = limiter.admit_call(info.trunk, caller_key(msg), branch, ctx.now)
    elif msg.method == b"REGISTER":
        decision = limiter.admit_registration(info.trunk, ctx.now)
    else:
        return None
    if decision.verdict is LimitVerdict.ADMITTED:  # `Decision.admitted`, without a call
        return None
    limited = Info(info.method, info.call_id, info.trunk, info.user, 0, decision.verdict.value)
    extra: tuple[tuple[bytes, bytes], ...] = ()
    if decision.retry_after is not None:
        extra = ((b"Retry-After", b"%d" % decision.retry_after),)
    reason = REASONS[decision.verdict]
    return [reply(ctx, 503, reason, Cause.TRUNK_LIMITED, limited, extra)]


def answered(st: State, msg: Response, now: float) -> None:
    """A final response from the upstream to an INVITE, being relayed to the caller (the core
    calls it for those alone)."""
    if msg.status < 300:
        st.limiter.established(caller_key(msg), msg.to.tag or b"", now)
    else:
        st.limiter.failed(caller_key(msg))


def failed(st: State, msg: Request) -> None:
    """The caller's CANCEL of an INVITE it was admitted for, or an INVITE that could not be
    delivered: the call being set up no longer counts."""
    st.limiter.failed(caller_key(msg))


def ended(st: State, msg: Request) -> None:
    """A BYE from the caller (of a dialog it was admitted for) or from the upstream."""
    st.limiter.ended(msg.call_id, msg.from_.tag or b"", msg.to.tag or b"")
