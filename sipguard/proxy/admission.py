"""Admission: may this request from outside go to the upstream, and as whom (DESIGN §4)?

Owns: the decision for every request that does not come from the upstream: scanners, ACK and
CANCEL matching (RFC 3261 §16.10, §17.2.3, §22.1), in-dialog requests of admitted dialogs, the
trunk by source address, request sanity (RFC 3261 §16.3), OPTIONS to us, and digest
(RFC 3261 §22, RFC 7616): the check returns a `DigestOutcome`, and one table (`OUTCOMES`) maps
each outcome to what happens. The result is a verdict: `Admitted` (forwarding writes the bytes),
or the actions of a refusal, a challenge or a reply.

Never does: write forwarded bytes or choose where they go (forwarding does), I/O, clocks.

Where a request can still be refused once its trunk is known (per-trunk limits): `_admit`, the
one exit every admitted new request passes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from enum import Enum
from typing import NamedTuple

from sipguard.auth.credentials import Entry, SecretCheck
from sipguard.auth.digest import (
    MAX_PARAM_LENGTH,
    DigestAnswer,
    MalformedAnswer,
    challenge_template,
)
from sipguard.auth.nonce import NonceVerdict
from sipguard.errors import ParseError
from sipguard.proxy import limiting
from sipguard.proxy.actions import Action, Cause, Drop, Info, ShareFailure
from sipguard.proxy.context import Admitted, Context, Pending
from sipguard.proxy.memory import DIALOG_LINGER, DIALOG_TTL, RETRANSMISSION_TTL
from sipguard.proxy.replies import TRAILER, head, rate_limited, refuse, reply, sent, text
from sipguard.proxy.via import (
    BRANCH_PREFIX,
    is_our_tag,
    one_via_value,
    single_via,
    transaction_key,
)
from sipguard.settings import Trunk
from sipguard.sip import Credentials, Request, parse_credentials, parse_uri

URI_SCHEMES = frozenset({b"sip", b"sips", b"tel"})


Verdict = Admitted | Pending | list[Action]


class DigestOutcome(Enum):
    """What a request's digest credentials turned out to be (RFC 3261 §22, RFC 7616)."""

    __hash__ = object.__hash__  # singletons: `OUTCOMES[outcome]` hashes in C (see `Cause`)

    OK = "ok"
    NO_CREDENTIALS = "no credentials for our realm"
    DUPLICATE = "two answers for our realm"
    MALFORMED = "malformed answer"
    NOT_OFFERED = "algorithm or qop not offered"
    STALE = "stale nonce"
    FOREIGN_NONCE = "nonce not issued to this source"
    UNKNOWN_USER = "unknown user"
    BAD = "wrong password"
    EXPIRED = "credential expired or not yet valid"
    URI_MISMATCH = "digest uri differs from the Request-URI"
    FOREIGN_OPAQUE = "opaque not ours"
    REPLAY = "nonce-count replayed"
    ASK = "nonce-count asked of every instance"  # shared state: the answer decides OK or REPLAY


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


class DigestCheck(NamedTuple):
    """The outcome of a digest check, with what the mapping to an action needs."""

    outcome: DigestOutcome
    credentials: dict[int, bool]
    answer: DigestAnswer | None = None
    entry: Entry | None = None
    detail: str = ""
    expiry: float | None = None  # the nonce's end (read from it)
    killed: bool = False  # a wrong answer killed the nonce (to be killed everywhere too)


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
    dialogs.touch(call_id, ctx.now + DIALOG_TTL)
    if ctx.msg.method == b"BYE":
        dialogs.expire_at_most(call_id, ctx.now + DIALOG_LINGER)
        limiting.ended(ctx.st, ctx.msg)
    return Admitted(Cause.IN_DIALOG, Info(info.method, info.call_id, dialog.trunk, dialog.user))


def _new_request(ctx: Context, info: Info) -> Verdict:
    """A request that starts a transaction: trunk by address, sanity, then IP trust or digest."""
    candidates = ctx.cfg.matcher.candidates(ctx.source.host)
    if not candidates:
        return refuse(ctx, Cause.ACL_DENIED, info)
    refusal = _sanity(ctx, info)
    if refusal is not None:
        return refusal
    if ctx.msg.method == b"OPTIONS" and _is_for_us(ctx):
        return [reply(ctx, 200, b"OK", Cause.OPTIONS_ANSWERED, info)]
    for trunk in candidates:
        if not trunk.requires_auth:
            return _admit(
                ctx, Admitted(Cause.ADMITTED_IP, Info(info.method, info.call_id, trunk.name))
            )
    return _authenticate(ctx, candidates, info)


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
    proxy_require = msg.get_all(b"proxy-require")
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


def _is_for_us(ctx: Context) -> bool:
    uri = ctx.msg.request_uri
    if uri.user or not uri.is_sip:
        return False
    return (text(uri.host), uri.port or 5060) in ctx.cfg.own and not ctx.msg.get_all(b"route")


# ---------------------------------------------------------------------------------- digest


def _authenticate(ctx: Context, candidates: Sequence[Trunk], info: Info) -> Verdict:
    """DESIGN §4 step 3: check the digest answer, then map the outcome through `OUTCOMES`."""
    algorithms = _algorithms(ctx, candidates)
    check = check_digest(ctx, candidates, algorithms, info.method)
    if check.outcome is DigestOutcome.ASK:
        assert check.expiry is not None
        return Pending(check, algorithms, info, check.expiry)
    return conclude(ctx, check, algorithms, info, candidates)


def conclude(
    ctx: Context,
    check: DigestCheck,
    algorithms: tuple[str, ...],
    info: Info,
    candidates: Sequence[Trunk] | None = None,
) -> Admitted | list[Action]:
    """What a digest outcome means (`OUTCOMES`); also the end of a `Pending` verdict.
    `candidates`: the source's trunks when the caller has them (else looked up again)."""
    step = OUTCOMES[check.outcome]
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
        return _challenge(ctx, candidates, algorithms, False, Cause.CHALLENGED, info)
    if step is Step.STALE_CHALLENGE:
        info = Info(info.method, info.call_id, "", user)
        return _challenge(ctx, candidates, algorithms, True, Cause.STALE_NONCE, info)
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
    info = Info(info.method, info.call_id, "", user, 0, check.outcome.value)
    return refuse(ctx, Cause.AUTH_FAILED, info, counted=True)


def counted(ctx: Context, pending: Pending, shared: bool | None) -> DigestCheck:
    """A `Pending` answer with every instance's nonce-count verdict: OK or REPLAY. None: the
    shared state is unavailable, so the local view decides (`state.on_error: local`; the local
    tracker is kept in step either way). A retransmission admitted meanwhile stays OK."""
    st = ctx.st
    check: DigestCheck = pending.check
    answer = check.answer
    assert answer is not None
    nc = answer.nonce_count
    local = st.tracker.accept(answer.nonce, nc, pending.expiry, ctx.now)
    key = retransmission_key(ctx.msg, ctx.ip, answer, nc)
    if st.answered.get(key, ctx.now) is None and not (local if shared is None else shared):
        return check._replace(outcome=DigestOutcome.REPLAY)
    st.answered.put(key, True, ctx.now + RETRANSMISSION_TTL)
    return check._replace(outcome=DigestOutcome.OK)


def _our_credentials(ctx: Context) -> tuple[list[tuple[bytes, Credentials]], dict[int, bool]]:
    """The digest answers for our realm in the header a challenge of this request asks for
    (REGISTER: Authorization, else Proxy-Authorization; RFC 3261 §22.2, §22.3), each with the
    header value it was read from, and what each header of that name turned out to be (index
    -> ours)."""
    ours: list[tuple[bytes, Credentials]] = []
    parsed: dict[int, bool] = {}
    if ctx.plain:
        return ours, parsed  # `Config.needs_index` found no credential header: none to read
    msg = ctx.msg
    key = b"authorization" if msg.method == b"REGISTER" else b"proxy-authorization"
    realm = ctx.cfg.realm
    for index, value in zip(msg.indices(key), msg.get_all(key), strict=True):
        credentials = parse_credentials(value)
        mine = credentials.is_digest and credentials.params.get("realm") == realm
        parsed[index] = mine
        if mine:
            ours.append((value, credentials))
    return ours, parsed


def _answer(value: bytes, credentials: Credentials) -> DigestAnswer:
    """The digest answer of a credentials header value. An ASCII value no longer than any one
    parameter may be holds lowercase, unique names (`parse_credentials`) and short ASCII values:
    validated as they are; any other goes through every check of `from_params`."""
    if len(value) <= MAX_PARAM_LENGTH and value.isascii():
        return DigestAnswer.from_lowered(credentials.params)
    return DigestAnswer.from_params(credentials.params, latin1=True)


def check_digest(
    ctx: Context, candidates: Sequence[Trunk], algorithms: Sequence[str], method: str
) -> DigestCheck:
    """The outcome of the request's digest answer (`method`: the request's, as text). The same
    work whatever the outcome once an answer is usable: look up, hash, compare
    (SECURITY-CASES 26)."""
    ours, parsed = _our_credentials(ctx)
    if len(ours) > 1:
        return DigestCheck(DigestOutcome.DUPLICATE, parsed)  # never pick one (SECURITY-CASES 11)
    if not ours:
        return DigestCheck(DigestOutcome.NO_CREDENTIALS, parsed)
    try:
        answer = _answer(*ours[0])
    except MalformedAnswer as exc:
        return DigestCheck(DigestOutcome.MALFORMED, parsed, detail=str(exc)[:80])
    if answer.algorithm not in algorithms or answer.qop != "auth":
        return DigestCheck(
            DigestOutcome.NOT_OFFERED, parsed, detail=DigestOutcome.NOT_OFFERED.value
        )
    cfg, st, msg = ctx.cfg, ctx.st, ctx.msg
    # Every secret of the username (several during a rotation), at the same cost whatever the
    # outcome; a secret that is not current is refused like a wrong one (issue 16).
    trunks = [t.name for t in candidates]
    secret = cfg.store.check(answer, method, msg.body, trunks, ctx.now)
    verdict, expiry = st.issuer.check_with_expiry(answer.nonce, cfg.realm, ctx.ip, ctx.now)
    outcome = _outcome(ctx, answer, secret.outcome, verdict)
    killed = False
    if outcome is DigestOutcome.OK:
        outcome = _count_nonce(ctx, answer, expiry)
    elif (
        verdict is NonceVerdict.VALID
        and secret.outcome is not SecretCheck.OK
        and expiry is not None
    ):
        # A cracker reuses one nonce for many guesses: one wrong answer kills it.
        st.tracker.kill(answer.nonce, expiry, ctx.now)
        killed = True
    return DigestCheck(outcome, parsed, answer, secret.entry, expiry=expiry, killed=killed)


def _outcome(
    ctx: Context,
    answer: DigestAnswer,
    secret: SecretCheck,
    verdict: NonceVerdict,
) -> DigestOutcome:
    """The outcome of a usable answer, before its nonce-count is counted; the order of the
    checks decides which reason is logged, never what the peer sees."""
    if verdict is NonceVerdict.INVALID:
        return DigestOutcome.FOREIGN_NONCE
    if secret is SecretCheck.UNKNOWN_USER:
        return DigestOutcome.UNKNOWN_USER
    if secret is SecretCheck.WRONG:
        return DigestOutcome.BAD
    if secret is SecretCheck.NOT_CURRENT:
        return DigestOutcome.EXPIRED
    if not same_uri(answer.uri.encode("utf-8"), ctx.msg):
        return DigestOutcome.URI_MISMATCH
    if answer.opaque is not None and not ctx.st.issuer.check_opaque(answer.opaque, ctx.cfg.realm):
        return DigestOutcome.FOREIGN_OPAQUE
    if verdict is NonceVerdict.STALE:
        return DigestOutcome.STALE  # a right answer to an expired nonce (RFC 7616 §3.3)
    return DigestOutcome.OK


def _count_nonce(ctx: Context, answer: DigestAnswer, expiry: float | None) -> DigestOutcome:
    """A right answer: OK when its nonce-count is new, or when it is a retransmission of a request
    admitted within RETRANSMISSION_TTL; REPLAY otherwise."""
    st = ctx.st
    nc = answer.nonce_count
    key = retransmission_key(ctx.msg, ctx.ip, answer, nc)
    if st.answered.get(key, ctx.now) is not None:
        return DigestOutcome.OK
    if expiry is not None and ctx.cfg.settings.state.backend != "memory":
        return DigestOutcome.ASK  # every instance's count decides (DESIGN §7): `counted`
    if expiry is None or not st.tracker.accept(answer.nonce, nc, expiry, ctx.now):
        return DigestOutcome.REPLAY
    st.answered.put(key, True, ctx.now + RETRANSMISSION_TTL)
    return DigestOutcome.OK


def retransmission_key(
    msg: Request, source_ip: str, answer: DigestAnswer, nc: int
) -> tuple[str, str, int, str, bytes, bytes, int]:
    """What a retransmission repeats and a new request changes (RFC 3261 §17.2.3 matching plus
    the digest answer, whose nonce-count is `nc`): the same key twice is one request sent
    twice."""
    return (
        source_ip,
        answer.nonce,
        nc,
        answer.cnonce or "",
        msg.top_via.branch or b"",
        msg.call_id,
        msg.cseq.number,
    )


def _algorithms(ctx: Context, candidates: Sequence[Trunk]) -> tuple[str, ...]:
    """The challenge order: the first credential trunk's, then the others' (DESIGN §3).
    Every candidate here requires credentials (`_new_request` admitted the source otherwise)."""
    default = ctx.cfg.settings.auth.algorithms
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
    for trunk in candidates:  # noqa: SIM110 - a loop: no generator object per challenge
        if trunk.whitelist:
            return False
    return True


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
    candidates: Sequence[Trunk] | None,
    algorithms: tuple[str, ...],
    stale: bool,
    cause: Cause,
    info: Info,
) -> list[Action]:
    """401 + WWW-Authenticate for REGISTER, else 407 + Proxy-Authenticate (RFC 3261 §22.1)."""
    cfg, st = ctx.cfg, ctx.st
    if candidates is None:
        candidates = cfg.matcher.candidates(ctx.source.host)
    if _throttled(candidates) and not st.guard.allow_request(ctx.ip, ctx.now):
        return rate_limited(ctx, info)
    nonce = st.issuer.issue_bytes(
        cfg.realm, ctx.ip, ctx.now, cfg.settings.auth.nonce_ttl, st.next_unique()
    )
    register = ctx.msg.method == b"REGISTER"
    if register:
        status, reason = 401, b"Unauthorized"
    else:
        status, reason = 407, b"Proxy Authentication Required"
    lines = _challenge_lines(cfg.realm, cfg.opaque, algorithms, stale, register)
    return [sent(ctx, head(ctx, status, reason) + nonce.join(lines), status, cause, info)]


def same_uri(digest_uri: bytes, request: Request) -> bool:
    """The digest `uri` names the Request-URI (RFC 3261 §22.4, SECURITY-CASES 25).

    Equal bytes; or a SIP URI with the same scheme, host and port and either the same user or
    none: SIPp and several UAs answer with `sip:HOST:PORT` (and write `sip:::1:5060` for
    `sip:[::1]:5060`). A user part that differs, another host, port or scheme never match."""
    if digest_uri == request.uri:
        return True
    ruri = request.request_uri
    if not ruri.is_sip:
        return False
    port = ruri.port or 5060
    if b":" in ruri.host and digest_uri == b"%s:%s:%d" % (ruri.scheme, ruri.host, port):
        return True
    try:
        uri = parse_uri(digest_uri)
    except ParseError:
        return False
    return (
        uri.scheme == ruri.scheme
        and uri.host == ruri.host
        and (uri.port or 5060) == port
        and (uri.user is None or uri.user == ruri.user)
    )
