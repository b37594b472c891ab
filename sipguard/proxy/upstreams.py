"""Where an admitted request goes, among the configured upstreams, and what the core does with
what comes back from them (issue 14): the glue between the core's entry points, forwarding and
the upstream pool (proxy/failover.py).

Owns: `Routing`, one per core, holding the pool and giving it the core's callbacks (send the
request again elsewhere, answer the client ourselves, the local address toward an upstream):
- `to_upstream`: a request of a forwarded transaction (a client retransmission, the ACK of its
  non-2xx answer, its CANCEL) goes to the attempt in progress, on its branch (RFC 3261 §9.1:
  a CANCEL carries the INVITE's branch); an in-dialog request to the upstream its next Route
  or Request-URI names (else the pool's choice for its Call-ID); a new one to the pool's first
  candidate, which then keeps a client transaction; none up: `503` with Retry-After at once,
  nothing forwarded;
- `on_response`, `upstream_failed`, `tick`: the pool's verdicts as actions.

Never does: I/O, clocks; edit bytes (forwarding does); decide health or failover (the pool
does).
"""

from __future__ import annotations

from sipguard.errors import ParseError
from sipguard.proxy import forwarding, limiting
from sipguard.proxy.actions import Action, Address, Cause, Forward
from sipguard.proxy.context import Admitted, Config, Context, State
from sipguard.proxy.failover import Relay, Upstreams
from sipguard.proxy.outgoing import Line, edited_lines
from sipguard.proxy.replies import RETRY_AFTER, reply, text
from sipguard.proxy.upstream_report import UpstreamReport
from sipguard.proxy.via import (
    branch_on,
    checked_destination,
    flow_token,
    is_sent_via,
    response_destination,
    transaction_key,
    uri_destination,
)
from sipguard.settings import Settings
from sipguard.sip import Request, Response, SipUri, parse_message
from sipguard.sip.lists import split_list
from sipguard.sip.values import NameAddr

Pending = tuple[Context, Admitted]  # what a client transaction keeps to send its request again


class Routing:
    """The upstream pool as the core uses it. `config` is read at each call (reloads)."""

    __slots__ = ("_config", "pool")

    def __init__(self, settings: Settings, key: bytes, config: Config) -> None:
        self._config = config
        self.pool: Upstreams[Pending] = Upstreams(
            settings, key, self._resend, self._answer, self._local_for
        )

    def reconfigure(self, settings: Settings, config: Config) -> None:
        self._config = config
        self.pool.reconfigure(settings)

    def use_config(self, config: Config) -> None:
        """The same settings compiled again (the shell's upstream-facing sockets changed)."""
        self._config = config

    # ------------------------------------------------------------------ requests

    def to_upstream(self, ctx: Context, verdict: Admitted) -> list[Action]:
        """Forward an admitted request (see the module docstring for where it goes)."""
        msg, pool = ctx.msg, self.pool
        key = transaction_key(msg, ctx.ip)
        if msg.method == b"CANCEL":
            attempt = pool.cancelled(key)
        else:  # `pool.current(key)` in one lookup (every forwarded request asks)
            txn = pool.table.find(key)
            attempt = txn.current if txn is not None else None
        if attempt is not None:
            return forwarding.to_upstream(ctx, verdict, attempt.to, attempt.branch, key)
        if msg.method in (b"ACK", b"CANCEL") or msg.to.tag:
            return forwarding.to_upstream(ctx, verdict, self._dialog_upstream(ctx), None, key)
        candidates = pool.candidates(msg.call_id)
        if not candidates:
            retry = ((b"Retry-After", RETRY_AFTER),)
            info = verdict.info
            return [reply(ctx, 503, b"Service Unavailable", Cause.UPSTREAM_ERROR, info, retry)]
        first, *others = candidates
        token = flow_token(ctx.source)  # once: for the branch and for our Via
        branch = branch_on(ctx.st.branch_key, msg, token)
        actions = forwarding.to_upstream(ctx, verdict, first.address, branch, key, token)
        sent = actions[-1] if actions else None
        if isinstance(sent, Forward):
            pool.started(key, (ctx, verdict), sent, branch, others, ctx.now)
        return actions

    def _dialog_upstream(self, ctx: Context) -> Address | None:
        """An in-dialog request (or an ACK/CANCEL no transaction knows): the upstream its next
        Route or Request-URI names, else the pool's choice for its Call-ID, else the first."""
        msg, pool = ctx.msg, self.pool
        members = pool.pool.members
        if len(members) == 1:
            return members[0].address  # no choice to make: no Route or URI to parse
        # no Route at all (the parser's fast path says so without a header index): the
        # Request-URI names the next hop
        uri = msg.request_uri if ctx.plain else _next_hop(ctx.cfg, msg, ctx.found)
        named = uri_destination(uri)
        if named is not None and pool.is_upstream(named):
            return named
        candidates = pool.candidates(msg.call_id)
        if candidates:
            return candidates[0].address
        return ctx.cfg.upstreams[0] if ctx.cfg.upstreams else None

    # ------------------------------------------------------------------ what comes back

    def on_response(self, st: State, msg: Response, source: Address, now: float) -> list[Action]:
        """A response: a probe's answer or a failed branch ends here; the others are relayed
        to where their top Via, when it is ours, says (`_held_destination` when a client
        transaction holds the request; else `via.response_destination`)."""
        pooled = self.pool.on_response(msg, source, now)
        if pooled is Relay.MATCHED:
            destination = self._held_destination(st, msg)
        elif pooled is Relay.UNKNOWN:
            destination = response_destination(st.branch_key, msg)
        else:
            return pooled
        return forwarding.relay_response(self._config, msg, destination)

    def _held_destination(self, st: State, msg: Response) -> Address | None:
        """Where a response on a branch of a client transaction goes: its top Via is the one we
        wrote in the request sent on that branch (`via.is_sent_via`: no MAC recomputed, no Via
        below parsed), so to the client that request came from (the address our flow token
        names, as `response_destination` would read it); else the stateless check, whose MAC
        is the transaction's first branch (a later attempt's branch is not stateless)."""
        found = self.pool.table.match(msg.top_via.branch or b"")
        if found is None:  # not reached: the pool matched it just now
            return response_destination(st.branch_key, msg)
        txn, attempt = found
        if is_sent_via(msg.top_via, attempt.data):
            client = txn.context[0].source
            return checked_destination(client.transport, client.host, client.port)
        return response_destination(st.branch_key, msg, txn.attempts[0].branch)

    def upstream_failed(self, forward: Forward, now: float) -> list[Action] | None:
        """A Forward not delivered: a probe's failure, or an attempt's (failover, or our
        answer); None when it is neither (the core answers as before)."""
        try:
            sent = parse_message(forward.data, self._config.parser_limits)
        except ParseError:
            return None
        branch = sent.top_via.branch if isinstance(sent, Request) else None
        return self.pool.upstream_failed(forward, branch, now) if branch else None

    def tick(self, now: float) -> list[Action | UpstreamReport]:
        """Failovers and answers on timeout, probes due, and the report for the shell."""
        actions: list[Action | UpstreamReport] = list(self.pool.tick(now))
        actions.append(self.pool.report())
        return actions

    # ------------------------------------------------------------------ the pool's callbacks

    def _resend(self, pending: Pending, to: Address, branch: bytes) -> Forward | None:
        ctx, verdict = pending
        ctx = ctx._replace(cfg=self._config)
        actions = forwarding.to_upstream(ctx, verdict, to, branch)
        sent = actions[-1] if actions else None
        return sent if isinstance(sent, Forward) else None

    def _answer(self, pending: Pending, status: int) -> Action:
        ctx, verdict = pending
        if ctx.msg.method == b"INVITE":
            limiting.failed(ctx.st, ctx.msg)  # no upstream took it: its trunk's slot is free
        if status == 408:
            return reply(ctx, 408, b"Request Timeout", Cause.UPSTREAM_ERROR, verdict.info)
        retry = ((b"Retry-After", RETRY_AFTER),)
        return reply(ctx, 503, b"Service Unavailable", Cause.UPSTREAM_ERROR, verdict.info, retry)

    def _local_for(self, destination: Address) -> Address | None:
        cfg = self._config
        local = forwarding.listener_for(cfg, destination)
        return local or (cfg.listeners[0] if cfg.listeners else None)


def _next_hop(cfg: Config, msg: Request, found: list[Line] | None) -> SipUri:
    """The URI a request with Route headers goes to next: the first Route value that does not
    name us (RFC 3261 §16.4, as `routes.our_routes` counts them), else the Request-URI. A value
    written as we write our Record-Route (`Config.route_to_us`, as `routes.found_routes` reads
    it) names us without being parsed; the first other one is parsed and checked."""
    route_to_us, limit = cfg.route_to_us.fullmatch, msg.limits_uri
    for value in _route_values(cfg, msg, found):
        for element in [value] if value.find(b",") < 0 else split_list(value):
            if len(element) <= limit and route_to_us(element) is not None:
                continue
            uri = NameAddr(element, limit).uri
            if not uri.is_sip or (text(uri.host), uri.port or 5060) not in cfg.own:
                return uri
    return msg.request_uri


def _route_values(cfg: Config, msg: Request, found: list[Line] | None) -> list[bytes]:
    """The Route header values, in order: on the parser's fast path from the lines the core
    scanned (`Context.found`, `outgoing.edited_lines`), so that no header index is built for
    them."""
    if found is None and msg.fast_match is not None:
        found = edited_lines(msg, cfg.needs_index)  # a context built without the scan
    if found is None:
        return msg.get_all(b"route")
    return [line.value for line in found if line.key == b"route"]
