"""The admission and routing core: bytes, the socket peer and `now` in; actions out.

Owns: the entry points (`handle`, `upstream_failed`, `tick`) and `reconfigure`; dispatching a
message to the module that decides it, and mapping a verdict to actions. The SIP decisions
themselves (DESIGN §4, the admission contract, and the RFC 3261 §16 proxy rules) live below:

    core.py        entry points, reconfigure, verdict -> actions
    compiled.py    settings -> Config, once per load (our names: listen[].advertise)
    unreadable.py  the answer to a message that could not be read (400/513 or silence)
    upstreams.py   which upstream an admitted request goes to; the pool's verdicts as actions
    failover.py    the upstream pool: health, selection, probes, client transactions (and below
                   it pool.py, probe.py, transactions.py, originate.py)
    admission.py   decides (scanner, ACK/CANCEL, dialog, trunk, sanity, digest): a verdict
    digest_check.py  what a digest answer is (DigestOutcome), the nonce-count counted
    forwarding.py  decides the outgoing bytes and chooses where they go
    routes.py      Route entries naming us, our Record-Route, the next hop they name
    outgoing.py    writes a forwarded request once: a plan of cuts over the received bytes
    replies.py     the replies sipguard builds itself (below both)
    via.py         our Via, branch, tag, flow token, a response's Via, destinations
    context.py     Config (compiled settings), State (kept across reloads), Context (a message)
    memory.py      bounded, expiring tables of admitted transactions and dialogs
    actions.py     Forward / Reply / Drop, Cause, Info: what the shell executes

Never does: I/O, clocks, logging, metrics. The shell calls `handle` for every message, executes
the returned actions, and calls `tick` about once a second. An exception escaping `handle` is a
defect (the shell counts it as `bug`): peer errors become replies or drops here.

Who is who:
- The upstream is any message whose socket peer is a configured upstream address (host and
  port), or arrives on a connection the shell opened to one. Its requests are trusted and routed
  by Route and Request-URI; its responses are relayed like any other.
- Everything else comes from outside and passes admission: source address against the trunks'
  whitelists, then digest where the candidate trunk has credentials.

Decisions where the contract is silent, and why they were taken: `admission`'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from sipguard.auth.nonce import NonceIssuer, NonceTracker
from sipguard.errors import ParseError
from sipguard.policy.guard import BanEvent, BanRecord, Guard, UnbanEvent
from sipguard.policy.limits import TrunkUsage
from sipguard.policy.sources import normalise_source_text
from sipguard.proxy import admission, digest_check, forwarding, limiting
from sipguard.proxy.actions import (
    Action,
    Address,
    AskNonceCount,
    Cause,
    Drop,
    Forward,
    Info,
    Question,
)
from sipguard.proxy.compiled import compile_config, guard_settings, trunk_limits
from sipguard.proxy.context import Admitted, Context, Pending, State
from sipguard.proxy.memory import Admission, ExpiringTable
from sipguard.proxy.outgoing import edited_lines
from sipguard.proxy.replies import RETRY_AFTER, reply
from sipguard.proxy.unreadable import Arrival, answer_unreadable
from sipguard.proxy.upstream_report import UpstreamReport, UpstreamStatus
from sipguard.proxy.upstreams import Routing
from sipguard.proxy.via import branch_key, tag_for
from sipguard.settings import Settings
from sipguard.sip import ParserLimits, Response, build_response, parse_message


class Core:
    """The sans-IO proxy. One instance per process; `reconfigure` swaps the config (SIGHUP) and
    keeps the dialogs, transactions, nonce counts and bans."""

    def __init__(
        self,
        settings: Settings,
        *,
        nonce_key: bytes,
        boot_id: bytes,
        started_at: float = float("-inf"),
    ) -> None:
        self._nonce_key = nonce_key
        issuer = NonceIssuer(nonce_key)
        limits = settings.limits
        # Nonces issued before this process started lost their nonce-counts with the old one.
        tracker = NonceTracker(
            limits.nonce_table_size, horizon=started_at + settings.auth.nonce_ttl
        )
        self._config = compile_config(settings, issuer, nonce_key)
        self._state = State(
            issuer,
            branch_key(nonce_key),
            (boot_id + b"\x00" * 4)[:4],
            tracker,
            Guard(guard_settings(settings)),
            limits.transaction_table_size,
        )
        self._routing = Routing(settings, nonce_key, self._config)
        self._state.limiter.configure(trunk_limits(settings))

    # ------------------------------------------------------------------ configuration

    def reconfigure(self, settings: Settings) -> None:
        """Apply a new config to new transactions; admitted dialogs and bans stay.

        Atomic: everything is built first, and only then swapped in, so a config that fails to
        compile (an exception from any builder) leaves the running one whole."""
        config = compile_config(
            settings, self._state.issuer, self._nonce_key, self._config.upstream_sockets
        )
        guard = guard_settings(settings)
        limits = trunk_limits(settings)
        # ---- nothing below may fail: the swap
        self._config = config
        self._state.guard.configure(guard)
        self._state.limiter.configure(limits)
        self._routing.reconfigure(settings, config)  # keeps health and transactions

    def use_upstream_sockets(self, sockets: Sequence[Address]) -> None:
        """The shell's own upstream-facing UDP sockets (at most one per address family, with
        their bound ports). Whatever goes to a UDP upstream is sent from the one of its family,
        which our Via and Record-Route then name, so that responses and in-dialog requests come
        back to it; a config without a UDP listener can still reach a UDP upstream."""
        cfg = self._config
        self._config = compile_config(
            cfg.settings, self._state.issuer, self._nonce_key, tuple(sockets)
        )
        # Probes and failover's new branches too (they read the pool's copy of the config).
        self._routing.use_config(self._config)

    @property
    def settings(self) -> Settings:
        return self._config.settings

    @property
    def parser_limits(self) -> ParserLimits:
        return self._config.parser_limits

    @property
    def _transactions(self) -> ExpiringTable[tuple[str, bytes, bytes], Admission]:
        return self._state.transactions

    @property
    def _dialogs(self) -> ExpiringTable[bytes, Admission]:
        return self._state.dialogs

    @property
    def _tracker(self) -> NonceTracker:
        return self._state.tracker

    # ------------------------------------------------------------------ entry points

    def handle(
        self,
        data: bytes,
        source: Address,
        local: Address,
        connection: int | None,
        now: float,
    ) -> list[Action]:
        """Decide what to do with one message (a datagram, or one framed stream message)."""
        cfg, st = self._config, self._state
        from_upstream = (source.host, source.port) in cfg.upstream_endpoints
        ip = "" if from_upstream else normalise_source_text(source.host)  # requests read it
        if not from_upstream and st.guard.is_banned(ip, now):
            # The cheapest path: no parsing for a banned source (issue 7).
            return [Drop(Cause.BANNED)]
        try:
            msg = parse_message(data, cfg.parser_limits)
        except ParseError as exc:
            arrival = Arrival(source, local, connection, from_upstream)
            return answer_unreadable(cfg, st.branch_key, exc, data, arrival)
        try:
            if isinstance(msg, Response):
                relayed = self._routing.on_response(st, msg, source, now)
                # a final answer from the upstream to a counted call: a 2xx or a failure
                final = msg.status >= 200 and msg.cseq.method == b"INVITE"
                if final and from_upstream and relayed and relayed[0].cause is Cause.RESPONSE:
                    limiting.answered(st, msg, now)
                return relayed
            # one scan for the lines admission and forwarding read (none: a plain request)
            found = edited_lines(msg, cfg.needs_index) if msg.fast_match is not None else None
            plain = found == []
            ip = ip or normalise_source_text(source.host)  # from the upstream: not read before
            ctx = Context(cfg, st, msg, source, local, connection, now, ip, plain, found)
            if from_upstream:
                return forwarding.from_upstream(ctx)
            return self._on_client_request(ctx)
        except ParseError as exc:
            # A header parsed on demand (Via, From, URI...) was malformed.
            arrival = Arrival(source, local, connection, from_upstream)
            return answer_unreadable(cfg, st.branch_key, exc, data, arrival, msg)

    def _on_client_request(self, ctx: Context) -> list[Action]:
        """A request from outside: admission's verdict, and what it means."""
        verdict = admission.decide(ctx)
        if isinstance(verdict, Admitted):  # the most common verdict: one type check
            forward = self._routing.to_upstream(ctx, verdict)
            if verdict.cause is Cause.CANCEL_FORWARDED:
                # RFC 3261 §16.10: answer the CANCEL ourselves, send it on the INVITE's branch.
                ok = reply(ctx, 200, b"OK", Cause.CANCEL_FORWARDED, verdict.info)
                return [ok, *forward]
            return forward
        if isinstance(verdict, Pending):
            # Shared state (DESIGN §7): a question for the shell; no action until it answers.
            resume = partial(self._resume, ctx, verdict)
            check = verdict.check
            question = AskNonceCount(check.answer.nonce, check.nonce_count, verdict.expiry, resume)
            self._state.questions.append(question)
            return []
        return verdict

    # ------------------------------------------------------------------ shared state (§7)

    def _resume(
        self, ctx: Context, pending: Pending, shared: bool | None, now: float
    ) -> list[Action]:
        """Conclude a `Pending` admission with every instance's nonce-count verdict (None: the
        shared state is unavailable: the local view decides, or `503` with on_error: refuse)."""
        # the same request, decided at `now` (built directly: `_replace` costs a dozen calls)
        ctx = Context(
            ctx.cfg,
            ctx.st,
            ctx.msg,
            ctx.source,
            ctx.local,
            ctx.connection,
            now,
            ctx.ip,
            ctx.plain,
            ctx.found,
        )
        if shared is None and self._config.settings.state.on_error == "refuse":
            extra = ((b"Retry-After", RETRY_AFTER),)
            info = pending.info
            return [reply(ctx, 503, b"Service Unavailable", Cause.STATE_ERROR, info, extra=extra)]
        outcome = digest_check.counted(ctx, pending, shared)
        verdict = admission.conclude(ctx, outcome, pending.check, pending.plan, pending.info)
        if not isinstance(verdict, Admitted):
            return verdict
        return self._routing.to_upstream(ctx, verdict)

    def shared_failures(self, ip: str, count: int, now: float) -> BanEvent | None:
        """The failure count of `ip` across every instance (the answer to a `ShareFailure`): the
        ban it calls for, which the shell publishes; every instance (this one included) applies
        it when it hears it (`apply_ban`)."""
        return self._state.guard.shared_ban(ip, count, now)

    def apply_ban(self, ip: str, until: float, now: float) -> BanEvent | None:
        """A ban heard from shared state (any instance, this one included), kept in the local
        guard so that the source is dropped without a round trip; None if nothing changed."""
        return self._state.guard.ban_until(ip, until, now)

    def shared_calls(self) -> dict[str, int]:
        """This instance's calls in progress per trunk with `concurrent_calls` (for the shell
        to share with the other instances)."""
        return self._state.limiter.capped()

    def set_remote_calls(self, counts: dict[str, int]) -> None:
        """The other instances' calls in progress per trunk, as last read from shared state:
        counted against `concurrent_calls` with this instance's own."""
        self._state.limiter.set_remote(counts)

    @property
    def questions(self) -> list[Question]:
        """What the core asks of, or tells, the shared state (drained by the shell)."""
        return self._state.questions

    def framing_error(
        self, error: ParseError, source: Address, local: Address, connection: int, now: float
    ) -> list[Action]:
        """A stream lost its framing (RFC 3261 §18.3; SECURITY-CASES 3, 5, 7): a 400/513 when the
        request's headers were recovered, else a Drop; the shell closes the connection in any
        case (the next message's boundary is unknowable)."""
        from_upstream = (source.host, source.port) in self._config.upstream_endpoints
        if not from_upstream and self._state.guard.is_banned(
            normalise_source_text(source.host), now
        ):
            return [Drop(Cause.BANNED)]
        arrival = Arrival(source, local, connection, from_upstream)
        return answer_unreadable(self._config, self._state.branch_key, error, b"", arrival)

    def upstream_failed(self, forward: Forward, now: float) -> list[Action]:
        """A Forward could not be delivered (refused, unreachable, TLS failure, connection lost):
        its sender gets `503` at once, built from the request the Forward carries (`origin`),
        sent where a response to it would have been relayed. Relayed responses and ACKs that
        could not be delivered are simply lost (RFC 3261 §17); so is a CANCEL, which we have
        answered already. A probe's or a failover attempt's goes to the upstream pool."""
        pooled = self._routing.upstream_failed(forward, now)
        if pooled is not None:
            return pooled
        origin = forward.origin
        if origin is None or origin.request.method in (b"ACK", b"CANCEL"):
            return [Drop(Cause.UPSTREAM_ERROR, Info(detail="relay not delivered"))]
        msg = origin.request
        if msg.method == b"INVITE":
            limiting.failed(self._state, msg)  # it never reached the upstream
        data = build_response(
            msg,
            503,
            b"Service Unavailable",
            to_tag=tag_for(self._state.branch_key, msg),
            extra_headers=((b"Retry-After", RETRY_AFTER),),
        )
        info = Info(forward.info.method, forward.info.call_id, "", "", 503)
        to = origin.source
        local = forwarding.listener_for(self._config, to)
        return [Forward(data, to, local, None, Cause.UPSTREAM_ERROR, info)]

    def tick(self, now: float) -> list[BanEvent | Action | UpstreamReport]:
        """Housekeeping and timers: expire memory and bans (ban and unban events to log); the
        upstream pool's failovers and answers on timeout and its probes (actions to execute),
        and its report (health changes, failovers, counts, every upstream's health)."""
        st = self._state
        st.transactions.sweep(now)
        st.dialogs.sweep(now)
        events: list[BanEvent | Action | UpstreamReport] = list(st.events)
        st.events = []
        for unban in st.guard.expire(now):
            events.append(BanEvent(unban.ip, 0.0))
        st.limiter.expire(now)  # calls whose end never came (issue 17)
        events.extend(self._routing.tick(now))
        return events

    @property
    def active_bans(self) -> int:
        return self._state.guard.active_bans()

    # ------------------------------------------------------------------ the admin API's view

    def bans(self, now: float) -> list[BanRecord]:
        """The bans in force at `now` (for `GET /v1/bans`)."""
        return self._state.guard.bans(now)

    def ban(self, ip: str, now: float, duration: float | None) -> BanEvent | None:
        """An operator's ban (`POST /v1/bans`); None when `ip` is exempt or bans are off."""
        return self._state.guard.ban(ip, now, duration)

    def unban(self, ip: str) -> UnbanEvent | None:
        """Lift a ban at once (`DELETE /v1/bans/{address}`); None when `ip` was not banned."""
        return self._state.guard.unban(ip)

    def trunk_usage(self, name: str) -> TrunkUsage | None:
        """A trunk's calls in progress and admitted/refused counts (`GET /v1/trunks`)."""
        return self._state.limiter.usage(name)

    def upstreams(self) -> list[UpstreamStatus]:
        """Every upstream's health, last probe and attempt counts (`GET /v1/upstreams`)."""
        return self._routing.pool.status()

    def calls_active(self) -> dict[str, int]:
        """Calls in progress per configured trunk (`sipguard_trunk_calls_active`)."""
        limiter = self._state.limiter
        return {trunk.name: limiter.active(trunk.name) for trunk in self.settings.trunks}
