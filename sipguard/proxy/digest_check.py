"""The digest check: what a request's answer to our challenge turns out to be (RFC 3261 §22,
RFC 7616), as a `DigestOutcome`.

Owns: `DigestOutcome`, `DigestCheck`, `check_digest` (the answers for our realm read from the
credential header a challenge of this request asks for, validated, the secret and the nonce
checked, the nonce-count counted), `counted` (the end of a nonce-count asked of every instance),
`retransmission_key`, `same_uri`. The same work whatever the outcome once an answer is usable:
look up, hash, compare (SECURITY-CASES 26). What an outcome leads to is admission's one table,
`admission.OUTCOMES`.

Never does: build replies or verdicts, I/O, clocks (`now` comes in the context).
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from sipguard.auth.answer import MAX_PARAM_LENGTH, DigestAnswer, MalformedAnswer
from sipguard.auth.credentials import Entry, SecretCheck
from sipguard.auth.nonce import NonceVerdict
from sipguard.errors import ParseError
from sipguard.proxy.context import Context, Pending, RetransmissionKey, SourcePlan
from sipguard.proxy.memory import RETRANSMISSION_TTL
from sipguard.sip import Credentials, Request, parse_credentials, parse_uri

__all__ = [
    "DigestCheck",
    "DigestOutcome",
    "check_digest",
    "counted",
    "retransmission_key",
    "same_uri",
]


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


class DigestCheck(NamedTuple):
    """The outcome of a digest check, with what the mapping to an action needs. An `ASK`
    check carries what its nonce-count was counted with (`nonce_count`, `key`), which the
    question and `counted` read rather than parse the answer again."""

    outcome: DigestOutcome
    credentials: dict[int, bool]
    answer: DigestAnswer | None = None
    entry: Entry | None = None
    detail: str = ""
    expiry: float | None = None  # the nonce's end (read from it)
    killed: bool = False  # a wrong answer killed the nonce (to be killed everywhere too)
    nonce_count: int = 0  # the answer's nonce-count (ASK)
    key: RetransmissionKey | None = None  # its `retransmission_key` (ASK)


def counted(ctx: Context, pending: Pending, shared: bool | None) -> DigestOutcome:
    """A `Pending` answer with every instance's nonce-count verdict: OK or REPLAY. None: the
    shared state is unavailable, so the local view decides (`state.on_error: local`; the local
    tracker is kept in step either way). A retransmission admitted meanwhile stays OK. The
    nonce-count and retransmission key are the ones the check counted with (no second parse)."""
    st = ctx.st
    check: DigestCheck = pending.check
    answer, key = check.answer, check.key
    assert answer is not None and key is not None
    local = st.tracker.accept(answer.nonce, check.nonce_count, pending.expiry, ctx.now)
    if st.answered.get(key, ctx.now) is None and not (local if shared is None else shared):
        return DigestOutcome.REPLAY
    st.answered.put(key, True, ctx.now + RETRANSMISSION_TTL)
    return DigestOutcome.OK


def _our_credentials(ctx: Context) -> tuple[list[tuple[bytes, Credentials]], dict[int, bool]]:
    """The digest answers for our realm in the header a challenge of this request asks for
    (REGISTER: Authorization, else Proxy-Authorization; RFC 3261 §22.2, §22.3), each with the
    header value it was read from, and what each header of that name turned out to be (index
    -> ours)."""
    ours: list[tuple[bytes, Credentials]] = []
    parsed: dict[int, bool] = {}
    msg, found = ctx.msg, ctx.found
    key = b"authorization" if msg.method == b"REGISTER" else b"proxy-authorization"
    realm = ctx.cfg.realm
    # (header index, value) of every line of that name: from the lines the core's scan found
    # on the fast path (one header per line there, so its index is the count of line ends
    # before it), else from the header index
    if found is None:
        lines = [(i, msg.value_at(i)) for i in msg.indices(key)]
    else:
        raw, first = msg.raw, msg.start_line_end
        lines = [(raw.count(b"\r\n", first, x.start), x.value) for x in found if x.key == key]
    for index, value in lines:
        credentials = parse_credentials(value)
        # another scheme has no params (`parse_credentials`): its realm is None, never ours
        mine = credentials.params.get("realm") == realm
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


def check_digest(ctx: Context, plan: SourcePlan, method: str) -> DigestCheck:
    """The outcome of the request's digest answer (`method`: the request's, as text; `plan`:
    its source's, which names the algorithms offered and the trunks whose secrets count). The
    same work whatever the outcome once an answer is usable: look up, hash, compare
    (SECURITY-CASES 26)."""
    if ctx.plain:  # `Config.needs_index` found no credential header: none to read
        return DigestCheck(DigestOutcome.NO_CREDENTIALS, {})
    ours, parsed = _our_credentials(ctx)
    if len(ours) > 1:
        return DigestCheck(DigestOutcome.DUPLICATE, parsed)  # never pick one (SECURITY-CASES 11)
    if not ours:
        return DigestCheck(DigestOutcome.NO_CREDENTIALS, parsed)
    try:
        answer = _answer(*ours[0])
    except MalformedAnswer as exc:
        return DigestCheck(DigestOutcome.MALFORMED, parsed, detail=str(exc)[:80])
    if answer.algorithm not in plan.algorithms or answer.qop != "auth":
        return DigestCheck(
            DigestOutcome.NOT_OFFERED, parsed, detail=DigestOutcome.NOT_OFFERED.value
        )
    cfg, st, msg = ctx.cfg, ctx.st, ctx.msg
    # Every secret of the username (several during a rotation), at the same cost whatever the
    # outcome; a secret that is not current is refused like a wrong one (issue 16).
    secret = cfg.store.check(answer, method, msg.body, plan.names, ctx.now)
    verdict, expiry = st.issuer.check_with_expiry(answer.nonce, cfg.realm, ctx.ip, ctx.now)
    outcome = _outcome(ctx, answer, secret.outcome, verdict)
    killed = False
    if outcome is DigestOutcome.OK:
        nc = answer.nonce_count
        key = retransmission_key(msg, ctx.ip, answer, nc)
        outcome = _count_nonce(ctx, answer, nc, key, expiry)
        if outcome is DigestOutcome.ASK:  # counted again on resume (`counted`) with nc and key
            return DigestCheck(outcome, parsed, answer, secret.entry, "", expiry, False, nc, key)
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


def _count_nonce(
    ctx: Context, answer: DigestAnswer, nc: int, key: RetransmissionKey, expiry: float | None
) -> DigestOutcome:
    """A right answer (nonce-count `nc`, retransmission key `key`): OK when its nonce-count is
    new, or when it is a retransmission of a request admitted within RETRANSMISSION_TTL; REPLAY
    otherwise."""
    st = ctx.st
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
) -> RetransmissionKey:
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
