"""Admission: may this request from outside go to the upstream, and as whom (DESIGN §4)?

Owns: the decision for every request that does not come from the upstream: scanners, ACK and
CANCEL matching (RFC 3261 §16.10, §17.2.3, §22.1), in-dialog requests of admitted dialogs, the
trunk by source address, request sanity (RFC 3261 §16.3), OPTIONS to us, and digest
(RFC 3261 §22, RFC 7616): `digest_check` says what the answer is (a `DigestOutcome`), and one
table here (`OUTCOMES`) maps each outcome to what happens, challenges included. The result is a
verdict: `Admitted` (forwarding writes the bytes), or the actions of a refusal, a challenge or a
reply.

Never does: write forwarded bytes or choose where they go (forwarding does), I/O, clocks.

Where a request can still be refused once its trunk is known (per-trunk limits): `_admit`, the
one exit every admitted new request passes. What the config implies for a source address (its
trunks, the one trusting it by address, the challenge's algorithms, the trunks whose secrets
count, its rate bucket) is derived once per address and config: `plan_for`.

Decisions where the contract is silent, and why:
- A digest failure (wrong password, unknown user, expired credential, replayed nonce-count,
  digest `uri` other than the Request-URI, a nonce we never issued to this source) is answered
  `403 Forbidden` (or nothing, when `auth.refuse` is `drop`), the same bytes apart from the
  To-tag whatever the reason, after the same work: an unknown user is checked against a dummy
  HA1 (SECURITY-CASES 26).
- A request repeated with the same digest answer, source, top Via branch, Call-ID and CSeq
  within 32 s (Timer F) is a retransmission and is forwarded again on the same branch; any
  other reuse of a nonce-count is a replay and a failure.
- An answer we cannot use (malformed parameters, an algorithm or qop we did not offer, no qop)
  gets a fresh challenge and counts no failure (SECURITY-CASES 23).
- In-dialog requests (a To-tag) of a dialog we admitted, from the address that set it up, are
  forwarded without a new challenge, even after a reload that changed the whitelist; any other
  in-dialog request is admitted like a new one (so a forged To-tag earns nothing).
- OPTIONS addressed to sipguard itself (no user part, our address) is answered `200` for any
  source that a trunk's whitelist admits, without a challenge: it is a keep-alive ping.
- Replies to sources that no trunk admits are never larger than their request when it came in a
  datagram (SECURITY-CASES 8, no amplification; a stream peer's address is verified by its
  handshake, and a stream whose framing fails gets its 400/513, SECURITY-CASES 3, 5, 7); the
  username of a digest answer is not compared with From/To (trunks and PBXs commonly
  authenticate as an account name that is not the caller).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from enum import Enum

from sipguard.auth.digest import (
    challenge_template,
)
from sipguard.proxy import limiting
from sipguard.proxy.actions import Action, Cause, Drop, Info, ShareFailure
from sipguard.proxy.context import Admitted, Config, Context, Pending, SourcePlan
from sipguard.proxy.digest_check import DigestCheck, DigestOutcome, check_digest
from sipguard.proxy.memory import DIALOG_LINGER, DIALOG_TTL
from sipguard.proxy.replies import TRAILER, head, rate_limited, refuse, reply, sent, text
from sipguard.proxy.via import (
    BRANCH_PREFIX,
    is_our_tag,
    one_via_value,
    single_via,
    transaction_key,
)
from sipguard.settings import Trunk

URI_SCHEMES = frozenset({b"sip", b"sips", b"tel"})
_PLANS_SIZE = 4096  # source addresses whose `SourcePlan` is kept (`Config.plans`)


Verdict = Admitted | Pending | list[Action]


class Step(Enum):
    """What an outcome leads to."""

    ADMIT = "admit"
    CHALLENGE = "challenge"  # a fresh challenge, no failure counted
    STALE_CHALLENGE = "stale challenge"  # stale=true (RFC 7616 §3.3), no failure counted
    REFUSE = "refuse"  # 403 or silence, the same whatever the reason; a failure for the source
    REJECT = "reject"  # 400: the request itself is unusable
    ASK = "ask"  # shared state: wait for every instance's nonce-count verdict (`Pending`)


# The one table from digest outcome to action (DESIGN §4 step 3; SECURITY-CASES 11, 23, 26).
OUTCOMES: dict[DigestOutcome, Step] = {
    DigestOutcome.OK: Step.ADMIT,
    DigestOutcome.NO_CREDENTIALS: Step.CHALLENGE,
    DigestOutcome.DUPLICATE: Step.REJECT,
    DigestOutcome.MALFORMED: Step.CHALLENGE,
    DigestOutcome.NOT_OFFERED: Step.CHALLENGE,
    DigestOutcome.STALE: Step.STALE_CHALLENGE,
    DigestOutcome.FOREIGN_NONCE: Step.REFUSE,
    DigestOutcome.UNKNOWN_USER: Step.REFUSE,
    DigestOutcome.BAD: Step.REFUSE,
    DigestOutcome.EXPIRED: Step.REFUSE,
    DigestOutcome.URI_MISMATCH: Step.REFUSE,
    DigestOutcome.FOREIGN_OPAQUE: Step.REFUSE,
    DigestOutcome.REPLAY: Step.REFUSE,
    DigestOutcome.ASK: Step.ASK,
}


def decide(ctx: Context) -> Verdict:
    """The verdict for a request from outside (DESIGN §4)."""
    msg = ctx.msg
    method = msg.method
    # the one Info of the decision's request (`text`, inlined: every request passes here)
    info = Info(method.decode("latin-1"), msg.call_id.decode("latin-1"))
    if ctx.st.guard.is_scanner(msg.user_agent):
        return [Drop(Cause.SCANNER, info)]
    if method == b"ACK":
        return _ack(ctx, info)
    if method == b"CANCEL":
        return _cancel(ctx, info)
    if msg.to.tag:
        dialog = _dialog(ctx, info)
        if dialog is not None:
            return dialog
    return _new_request(ctx, info)


def _ack(ctx: Context, info: Info) -> Verdict:
    """ACK is never challenged (RFC 3261 §22.1): it is absorbed when it acknowledges our own
    reply, admitted when it belongs to an admitted transaction or dialog, else dropped."""
    msg = ctx.msg
    if is_our_tag(msg.to.tag):
        return [Drop(Cause.ACK_ABSORBED, info)]
    admitted = ctx.st.transactions.get(transaction_key(msg, ctx.ip), ctx.now)
    if admitted is None:
        dialog = ctx.st.dialogs.get(msg.call_id, ctx.now)
        if dialog is None or dialog.source_ip != ctx.ip:
            return [Drop(Cause.STRAY, info)]
        admitted = dialog
    return Admitted(Cause.IN_DIALOG, Info(info.method, info.call_id, admitted.trunk, admitted.user))


def _cancel(ctx: Context, info: Info) -> Verdict:
    """RFC 3261 §16.10: a CANCEL of an admitted INVITE goes on (the core answers it 200)."""
    admitted = ctx.st.transactions.get(transaction_key(ctx.msg, ctx.ip), ctx.now)
    if admitted is None:
        return [Drop(Cause.STRAY, info)]  # no state for an unknown CANCEL (SECURITY-CASES 34)
    info = Info(info.method, info.call_id, admitted.trunk, admitted.user)
    limiting.failed(ctx.st, ctx.msg)
    return Admitted(Cause.CANCEL_FORWARDED, info)


def _dialog(ctx: Context, info: Info) -> Admitted | None:
    """An in-dialog request of a dialog we admitted, from the address that set it up."""
    call_id = ctx.msg.call_id
    dialogs = ctx.st.dialogs
    dialog = dialogs.get(call_id, ctx.now)
    if dialog is None or dialog.source_ip != ctx.ip:
        return None
    if ctx.msg.method == b"BYE":
        # kept DIALOG_LINGER (< DIALOG_TTL) for its retransmissions, at the end of the table as
        # any dialog in use: what a touch then `expire_at_most` leave, in one step
        dialogs.put(call_id, dialog, ctx.now + DIALOG_LINGER)
        limiting.ended(ctx.st, ctx.msg)
    else:
        dialogs.touch(call_id, ctx.now + DIALOG_TTL)
    return Admitted(Cause.IN_DIALOG, Info(info.method, info.call_id, dialog.trunk, dialog.user))


def _new_request(ctx: Context, info: Info) -> Verdict:
    """A request that starts a transaction: trunk by address, sanity, then IP trust or digest."""
    # the source's plan, derived from the config on its first request (`plan_for`)
    plan = ctx.cfg.plans.get(ctx.source.host) or plan_for(ctx.cfg, ctx.source.host)
    if not plan.trunks:
        return refuse(ctx, Cause.ACL_DENIED, info)
    refusal = _sanity(ctx, info)
    if refusal is not None:
        return refusal
    if ctx.msg.method == b"OPTIONS" and _is_for_us(ctx):
        return [reply(ctx, 200, b"OK", Cause.OPTIONS_ANSWERED, info)]
    trunk = plan.ip_trunk
    if trunk is not None:
        return _admit(ctx, Admitted(Cause.ADMITTED_IP, Info(info.method, info.call_id, trunk.name)))
    return _authenticate(ctx, plan, info)


def _admit(ctx: Context, admitted: Admitted) -> Admitted | list[Action]:
    """Every new request admitted (by address or digest) passes here, its trunk known: the place
    for checks that need the trunk (its own limits, issue 17) before anything is forwarded."""
    refused = limiting.check(ctx, admitted)
    return admitted if refused is None else refused


def _sanity(ctx: Context, info: Info) -> list[Action] | None:
    """RFC 3261 §16.3 request validation, once the source is known to be allowed."""
    msg = ctx.msg
    if msg.uri[:4].lower() != b"sip:" and msg.request_uri.scheme not in URI_SCHEMES:
        cause = Cause.UNSUPPORTED_URI_SCHEME
        return [reply(ctx, 416, b"Unsupported URI Scheme", cause, info)]
    if msg.max_forwards <= 0:
        return [reply(ctx, 483, b"Too Many Hops", Cause.TOO_MANY_HOPS, info)]
    one = single_via(msg)  # read on the fast path with one Via value
    if ctx.plain and one:
        return None  # no Proxy-Require, one Via: nothing below us to loop through
    proxy_require = msg.get_all(b"proxy-require") if _may_have(ctx, b"proxy-require") else []
    if proxy_require:
        # We support no extension that a proxy must understand (RFC 3261 §16.3 step 5).
        unsupported = b", ".join(v.strip() for v in proxy_require)
        extra = ((b"Unsupported", unsupported),)
        return [reply(ctx, 420, b"Bad Extension", Cause.BAD_EXTENSION, info, extra)]
    if one:
        return None  # one Via, read and validated by the parser's match
    if one_via_value(msg):
        # Nothing below us to loop through (§16.3 step 4 looks at every Via): the top Via
        # (read on the parser's fast path, or parsed, and refused if malformed, as before)
        # is the only one, and the full Via list is not parsed a second time.
        _ = msg.top_via
        return None
    vias = msg.vias
    if len(vias) > 1:
        own = ctx.cfg.own
        for via in vias:
            branch = via.branch
            if (
                branch is not None
                and branch.startswith(BRANCH_PREFIX)
                and (text(via.host), via.port or 5060) in own
            ):
                return [reply(ctx, 482, b"Loop Detected", Cause.LOOP_DETECTED, info)]
    return None


def _may_have(ctx: Context, key: bytes) -> bool:
    """False when the core's scan (`Context.found`) shows the request has no `key` line (a name
    `Config.needs_index` looks for), so that no header index is built to learn it."""
    found = ctx.found
    if found is None:
        return True
    for line in found:  # noqa: SIM110 - a loop: no generator per request
        if line.key == key:
            return True
    return False


def _is_for_us(ctx: Context) -> bool:
    uri = ctx.msg.request_uri
    if uri.user or not uri.is_sip:
        return False
    return (text(uri.host), uri.port or 5060) in ctx.cfg.own and not ctx.msg.get_all(b"route")


# ---------------------------------------------------------------------------------- digest


def _authenticate(ctx: Context, plan: SourcePlan, info: Info) -> Verdict:
    """DESIGN §4 step 3: check the digest answer, then map the outcome through `OUTCOMES`."""
    check = check_digest(ctx, plan, info.method)
    if check.outcome is DigestOutcome.ASK:
        assert check.expiry is not None
        return Pending(check, plan, info, check.expiry)
    return conclude(ctx, check.outcome, check, plan, info)


def conclude(
    ctx: Context,
    outcome: DigestOutcome,
    check: DigestCheck,
    plan: SourcePlan,
    info: Info,
) -> Admitted | list[Action]:
    """What a digest outcome means (`OUTCOMES`); also the end of a `Pending` verdict, whose
    `outcome` is `counted`'s (the check keeps its ASK). `plan`: the source's (`plan_for`)."""
    step = OUTCOMES[outcome]
    answer = check.answer
    user = answer.username[:64] if answer is not None else ""
    if step is Step.ADMIT:
        assert answer is not None and check.entry is not None
        ctx.st.guard.record_success(ctx.ip, ctx.now)
        info = Info(info.method, info.call_id, check.entry.trunk, answer.username)
        return _admit(ctx, Admitted(Cause.ADMITTED_DIGEST, info, check.credentials))
    if step is Step.CHALLENGE:
        if check.detail:
            info = Info(info.method, info.call_id, detail=check.detail)
        return _challenge(ctx, plan, False, Cause.CHALLENGED, info)
    if step is Step.STALE_CHALLENGE:
        info = Info(info.method, info.call_id, "", user)
        return _challenge(ctx, plan, True, Cause.STALE_NONCE, info)
    if step is Step.REJECT:
        return [reply(ctx, 400, b"Duplicate Credentials", Cause.PARSE_ERROR, info)]
    ban = ctx.st.guard.record_failure(ctx.ip, ctx.now)
    if ban is not None:
        ctx.st.events.append(ban)
    if ctx.cfg.settings.state.backend != "memory":  # counted across instances too (§7)
        killed = answer.nonce if check.killed and answer is not None else None
        expires = (check.expiry or 0.0) if killed is not None else 0.0
        window = ctx.cfg.settings.protection.ban_window
        banned = ban.until if ban is not None else 0.0
        ctx.st.questions.append(ShareFailure(ctx.ip, window, killed, expires, banned))
    info = Info(info.method, info.call_id, "", user, 0, outcome.value)
    return refuse(ctx, Cause.AUTH_FAILED, info, counted=True)


def plan_for(cfg: Config, host: str) -> SourcePlan:
    """The `SourcePlan` of source address `host` under `cfg`: derived on its first request and
    kept in `cfg.plans` (a new config starts empty; cleared when full, as the matcher's cache
    is, so that a flood of spoofed sources cannot grow it)."""
    plan = cfg.plans.get(host)
    if plan is not None:
        return plan
    trunks = cfg.matcher.candidates(host)
    ip_trunk = next((trunk for trunk in trunks if not trunk.requires_auth), None)
    names = frozenset(trunk.name for trunk in trunks)
    holders = {trunk.name for trunk in cfg.settings.trunks if trunk.requires_auth}
    plan = SourcePlan(
        trunks,
        ip_trunk,
        _algorithms(cfg, trunks),
        None if holders <= names else names,
        _throttled(trunks),
    )
    if len(cfg.plans) >= _PLANS_SIZE:
        cfg.plans.clear()
    cfg.plans[host] = plan
    return plan


def _algorithms(cfg: Config, candidates: Sequence[Trunk]) -> tuple[str, ...]:
    """The challenge order: the first credential trunk's, then the others' (DESIGN §3).
    Read only when no candidate admits the source by address, i.e. all require credentials."""
    default = cfg.settings.auth.algorithms
    seen: list[str] = []
    for trunk in candidates:
        for algorithm in trunk.algorithms or default:
            if algorithm not in seen:
                seen.append(algorithm)
    return tuple(seen) or default


def _throttled(candidates: Sequence[Trunk]) -> bool:
    """Whether a challenge to this source passes the anonymous per-source bucket
    (protection.rate): only when no trunk's whitelist names the source (`candidates`, its
    trunks), i.e. an open trunk (or none) admits it. A named source is its trunk's to limit
    (issue 12 item 6), so a carrier sending hundreds of calls a second from one address is
    never throttled by it."""
    return not any(trunk.whitelist for trunk in candidates)


@functools.lru_cache(maxsize=64)
def _challenge_lines(
    realm: str, opaque: str, algorithms: tuple[str, ...], stale: bool, register: bool
) -> tuple[bytes, ...]:
    """The end of a challenge (RFC 3261 §22.1: WWW-Authenticate in a 401 to a REGISTER, else
    Proxy-Authenticate in a 407; one line per algorithm, RFC 8760 §2.4) cut around its nonce:
    `nonce.join(lines)`. Derived from the config alone (a few combinations per config), so a
    challenge only splices in its nonce."""
    name = b"WWW-Authenticate: " if register else b"Proxy-Authenticate: "
    pieces: list[bytes] = []
    pending = b""
    for algorithm in algorithms:
        before, after = challenge_template(realm, opaque, algorithm, stale=stale)
        pieces.append(pending + name + before)
        pending = after + b"\r\n"
    pieces.append(pending + TRAILER)
    return tuple(pieces)


def _challenge(
    ctx: Context,
    plan: SourcePlan,
    stale: bool,
    cause: Cause,
    info: Info,
) -> list[Action]:
    """401 + WWW-Authenticate for REGISTER, else 407 + Proxy-Authenticate (RFC 3261 §22.1)."""
    cfg, st = ctx.cfg, ctx.st
    if plan.throttled and not st.guard.allow_request(ctx.ip, ctx.now):
        return rate_limited(ctx, info)
    nonce = st.issuer.issue_bytes(
        cfg.realm, ctx.ip, ctx.now, cfg.settings.auth.nonce_ttl, st.next_unique()
    )
    register = ctx.msg.method == b"REGISTER"
    if register:
        status, reason = 401, b"Unauthorized"
    else:
        status, reason = 407, b"Proxy Authentication Required"
    lines = _challenge_lines(cfg.realm, cfg.opaque, plan.algorithms, stale, register)
    return [sent(ctx, head(ctx, status, reason) + nonce.join(lines), status, cause, info)]
