"""Forwarding: the outgoing bytes of what admission let through, and where they go.

Owns: the RFC 3261 §16.6 request edits (our Via, Max-Forwards, Record-Route/Path, Route entries
naming us, credentials for our realm and identity headers stripped, ours attached), the
destination of an admitted request (the upstream) and of a request from the upstream (Route,
else Request-URI: §16.4, §16.12), relaying a response by its Via (§16.7), the listener to send
from, and remembering admitted INVITE transactions and dialogs (proxy/memory.py).

Never does: decide admission (admission.py does; everything here was admitted already), I/O.

Extension points:
- `_outgoing_headers`: which header lines of an admitted request are stripped and which are
  attached (identity: signed tenant headers, inbound copies stripped);
- `upstream_for`: the destination of an initial request, and `to_upstream` builds its Forward
  (the upstream pool, proxy/failover.py through core.py, passes the destination and branch).
"""

from __future__ import annotations

from sipguard.policy.sources import normalise_source_text
from sipguard.proxy import limiting
from sipguard.proxy.actions import Action, Address, Cause, Drop, Forward, Info, Origin, Transport
from sipguard.proxy.context import Admitted, Config, Context
from sipguard.proxy.memory import (
    DIALOG_LINGER,
    DIALOG_TTL,
    INVITE_TRANSACTION_TTL,
    Admission,
)
from sipguard.proxy.outgoing import Changes, Line, edited_lines, write_indexed, write_plain
from sipguard.proxy.replies import CREDENTIAL_KEYS, is_our_credential, reply, text
from sipguard.proxy.routes import found_routes, our_routes, record_routes, route_destination
from sipguard.proxy.via import (
    FLOW_PARAM,
    TransactionKey,
    branch_on,
    flow_token,
    received_params,
    transaction_key,
)
from sipguard.sip import Edits, Request, Response, without_top_via

__all__ = [  # our_routes: proxy/routes.py, read here by the writer's tests
    "DIALOG_CREATING",
    "from_upstream",
    "listener_for",
    "our_routes",
    "relay_response",
    "to_upstream",
    "upstream_for",
    "write_request",
]

# Methods that create a dialog and so get our Record-Route (RFC 3261 §16.6 step 4; RFC 6665).
DIALOG_CREATING = frozenset({b"INVITE", b"SUBSCRIBE", b"REFER"})
_NONE_STRIPPED: frozenset[int] = frozenset()  # `Changes.strip` of a request that loses no line


# ------------------------------------------------------------------------- to the upstream


def upstream_for(ctx: Context) -> Address | None:
    """Where an initial request admitted from outside goes: the primary upstream."""
    upstreams = ctx.cfg.upstreams
    return upstreams[0] if upstreams else None


def to_upstream(
    ctx: Context,
    admitted: Admitted,
    destination: Address | None = None,
    branch: bytes | None = None,
    key: TransactionKey | None = None,
    token: bytes | None = None,
) -> list[Action]:
    """RFC 3261 §16.6: forward an admitted request to the upstream: to `destination` on our
    `branch` when the upstream pool chose them (core.py), else the primary upstream on the
    stateless branch. `key`: its `transaction_key`, `token`: the source's `flow_token`, when
    the caller has them."""
    msg, info = ctx.msg, admitted.info
    max_forwards = msg.max_forwards
    if max_forwards <= 0:
        if msg.method == b"ACK":
            return [Drop(Cause.TOO_MANY_HOPS, info)]
        return [reply(ctx, 483, b"Too Many Hops", Cause.TOO_MANY_HOPS, info)]
    if destination is None:
        destination = upstream_for(ctx)
    if destination is None:
        return [reply(ctx, 503, b"Service Unavailable", Cause.UPSTREAM_ERROR, info)]
    out_local = listener_for(ctx.cfg, destination)
    via_local = out_local or ctx.cfg.listeners[0]
    data = write_request(ctx, admitted, via_local, max_forwards, branch, token)
    _remember(ctx, info, key)
    origin = Origin(msg, ctx.source, ctx.local, ctx.connection)
    return [Forward(data, destination, out_local, None, admitted.cause, info, origin)]


def write_request(
    ctx: Context,
    admitted: Admitted,
    via_local: Address,
    max_forwards: int,
    branch: bytes | None = None,
    token: bytes | None = None,
) -> bytes:
    """The outgoing bytes of an admitted request: what changes is decided here, then written in
    one pass (proxy/outgoing.py). `branch`: ours, when not the stateless one (a failover);
    `token`: the source's `flow_token`, when the caller has it (it computed the branch)."""
    msg, source, cfg = ctx.msg, ctx.source, ctx.cfg
    method = msg.method
    plain = ctx.plain
    if token is None:
        token = flow_token(source)
    ours = cfg.fragments[via_local.transport, via_local.host, via_local.port]
    if branch is None:
        branch = branch_on(ctx.st.branch_key, msg, token)
    via = ours.via_head + branch + ours.via_tail + token
    route_name, route_lines = _route_lines(ctx, method, via_local, token)
    found = None if plain else ctx.found  # plain: nothing found, nothing popped or stripped
    if found is None and not plain and msg.fast_match is not None:
        found = edited_lines(msg, cfg.needs_index)  # a context built without the scan
    if found is None:
        popped = 0 if plain else our_routes(cfg, msg)[0]
        strip = _NONE_STRIPPED if plain else _stripped(ctx, admitted)
    else:
        popped = found_routes(cfg, msg, found)[0]
        strip = _stripped_found(ctx, admitted, found)
    changes = Changes(
        via=via,
        received=received_params(msg.top_via, source),
        max_forwards=-1 if method == b"ACK" else max_forwards - 1,
        route_name=route_name,
        route_lines=route_lines,
        popped=popped,
        strip=strip,
        attach=_outgoing_headers(ctx, admitted),
    )
    if plain:
        return write_plain(msg, changes)
    if found is not None:
        return write_plain(msg, changes, found)  # strip: positions in `found`
    return write_indexed(msg, changes)


def _route_lines(
    ctx: Context, method: bytes, via_local: Address, token: bytes
) -> tuple[bytes, list[bytes]]:
    """Our Record-Route (a dialog-creating request) or Path (REGISTER) lines: one, or two when
    the two sides differ in transport or address family (RFC 5658, RFC 3327)."""
    if method in DIALOG_CREATING and not ctx.msg.to.tag:
        name = b"Record-Route"
    elif method == b"REGISTER":
        name = b"Path"
    else:
        return b"", []
    fragments = ctx.cfg.fragments
    local = ctx.local
    prev = fragments[local.transport, local.host, local.port]
    back = b"%s: %s;%s=%s>" % (name, prev.uri_head, FLOW_PARAM, token)
    ahead = fragments[via_local.transport, via_local.host, via_local.port]
    if ahead is prev:  # one listener both sides (one `Fragments` per address): one line
        return name, [back]
    return name, [b"%s: %s>" % (name, ahead.uri_head), back]


def _stripped(ctx: Context, admitted: Admitted) -> frozenset[int]:
    """Lines never forwarded, by header index: credentials for our realm and any incoming copy
    of the headers we attach or the upstream would trust (SECURITY-CASES 28;
    `identity.InboundFilter`: our prefix in any case, `identity.strip_inbound`,
    P-Asserted-Identity)."""
    known = admitted.credentials or {}
    msg = ctx.msg
    value_at = msg.value_at
    return frozenset(
        i for i, key in enumerate(msg.header_keys) if _strips(ctx, known, i, key, value_at(i))
    )


def _stripped_found(ctx: Context, admitted: Admitted, found: list[Line]) -> frozenset[int]:
    """`_stripped` for the lines a fast-path request's scan found (positions in `found`): on
    that path each header is one line, so a line's header index is the count of line ends
    before it (counted for a credential line only: `known` holds no other)."""
    known = admitted.credentials or {}
    raw, first = ctx.msg.raw, ctx.msg.start_line_end
    strip: list[int] = []
    for j, line in enumerate(found):
        key = line.key
        i = raw.count(b"\r\n", first, line.start) if key in CREDENTIAL_KEYS else -1
        if _strips(ctx, known, i, key, line.value):
            strip.append(j)
    return frozenset(strip)


def _strips(ctx: Context, known: dict[int, bool], i: int, key: bytes, value: bytes) -> bool:
    """Header `i` is not forwarded: `known` holds what admission found of its credential
    headers (index -> ours; `i` is read for a credential header only)."""
    if ctx.cfg.inbound.strips(key):
        return True
    if key not in CREDENTIAL_KEYS:
        return False
    if i in known:
        return known[i]
    return is_our_credential(value, ctx.cfg.realm)


def _outgoing_headers(ctx: Context, admitted: Admitted) -> list[bytes]:
    """The lines attached to an admitted request: the trunk, user and auth method admission
    decided, the trunk's attributes, the source, and the signature over them
    (`identity.Stamper`; without an `identity` section the trunk, user and attributes only)."""
    info, msg = admitted.info, ctx.msg
    if not info.trunk:
        return []
    source = (ctx.ip, ctx.source.port)
    return ctx.cfg.stamper.lines(
        info.trunk, info.user, source, msg.call_id, msg.cseq, msg.from_.tag, ctx.now
    )


def _remember(ctx: Context, info: Info, key: TransactionKey | None) -> None:
    """An admitted INVITE's transaction (for its CANCEL and ACK; `key`, when the caller has
    it) and a new dialog (for its in-dialog requests) are remembered."""
    msg, st = ctx.msg, ctx.st
    method = msg.method
    invite = method == b"INVITE"
    creating = method in DIALOG_CREATING and not msg.to.tag
    if not (invite or creating):
        return  # nothing to remember (REGISTER, in-dialog requests...): no Admission built
    admission = Admission(ctx.ip, info.trunk, info.user)
    if invite:
        if key is None:
            key = transaction_key(msg, ctx.ip)
        st.transactions.put(key, admission, ctx.now + INVITE_TRANSACTION_TTL)
    if creating:
        st.dialogs.put(msg.call_id, admission, ctx.now + DIALOG_TTL)


# ------------------------------------------------------------------------- from the upstream


def from_upstream(ctx: Context) -> list[Action]:
    """Requests from the upstream are trusted: routed by Route, else Request-URI (§16.4)."""
    msg, cfg, st = ctx.msg, ctx.cfg, ctx.st
    info = Info(text(msg.method), text(msg.call_id))
    if msg.method != b"ACK" and msg.max_forwards <= 0:
        return [reply(ctx, 483, b"Too Many Hops", Cause.TOO_MANY_HOPS, info)]
    found = ctx.found
    if found is None and msg.fast_match is not None:
        found = edited_lines(msg, cfg.needs_index)  # a context built without the scan
    popped, flow_hint = our_routes(cfg, msg) if found is None else found_routes(cfg, msg, found)
    destination = flow_hint or route_destination(msg, popped)
    if destination is None:
        return [reply(ctx, 404, b"Not Found", Cause.FROM_UPSTREAM, info)]
    out_local = listener_for(cfg, destination)
    if out_local is None:
        return [reply(ctx, 503, b"Service Unavailable", Cause.FROM_UPSTREAM, info)]
    record_route: list[tuple[bytes, bytes]] = []
    if msg.method in DIALOG_CREATING and not msg.to.tag:
        record_route = record_routes(cfg, b"Record-Route", ctx.local, out_local, destination)
        admission = Admission(normalise_source_text(destination.host), "", "")
        st.dialogs.put(msg.call_id, admission, ctx.now + DIALOG_TTL)
    elif msg.method == b"BYE":
        st.dialogs.expire_at_most(msg.call_id, ctx.now + DIALOG_LINGER)
        limiting.ended(st, msg)
    ours = cfg.fragments[out_local.transport, out_local.host, out_local.port]
    token = flow_token(ctx.source)
    via = ours.via(branch_on(st.branch_key, msg, token), token)
    actions: list[Action] = []
    if msg.method == b"CANCEL":
        actions.append(reply(ctx, 200, b"OK", Cause.CANCEL_FORWARDED, info))
    data = _upstream_request(msg, found, popped, record_route, via)
    origin = Origin(msg, ctx.source, ctx.local, ctx.connection)
    actions.append(Forward(data, destination, out_local, None, Cause.FROM_UPSTREAM, info, origin))
    return actions


def _upstream_request(
    msg: Request,
    found: list[Line] | None,
    popped: int,
    record_route: list[tuple[bytes, bytes]],
    via: bytes,
) -> bytes:
    """The outgoing bytes of a request from the upstream (§16.6: Route entries naming us
    popped, Max-Forwards, our Record-Route, our Via, decided in that order): on the parser's
    fast path from the match and the scan's lines (`found`), else edit by edit."""
    max_forwards = -1 if msg.method == b"ACK" else msg.max_forwards - 1
    if found is not None:
        changes = Changes(
            via=b"Via: " + via,
            received=[],
            max_forwards=max_forwards,
            route_name=b"Record-Route",
            route_lines=[name + b": " + value for name, value in record_route],
            popped=popped,
            strip=_NONE_STRIPPED,
            attach=[],
            via_last=True,
        )
        return write_plain(msg, changes, found)
    edits = Edits(msg)
    for _ in range(popped):
        edits.remove_first_route()
    if max_forwards >= 0:
        edits.replace_max_forwards(max_forwards)
    if record_route:
        edits.insert_headers(record_route)
    return edits.prepend_via(via).build()


# ------------------------------------------------------------------------- responses


def relay_response(cfg: Config, msg: Response, destination: Address | None) -> list[Action]:
    """RFC 3261 §16.7: relay a response to `destination`, the flow recorded in its top Via
    when that Via is ours (None: it is not, SECURITY-CASES 34; proxy/upstreams.py checks it),
    without that Via (step 3)."""
    # (`text`, inlined: every response passes here)
    info = Info(
        msg.cseq.method.decode("latin-1"), msg.call_id.decode("latin-1"), "", "", msg.status
    )
    if destination is None:
        return [Drop(Cause.STRAY, info)]
    if msg.cseq.method == b"CANCEL":
        # We answered the CANCEL ourselves (§16.10); the next hop's 200 ends here.
        return [Drop(Cause.CANCEL_FORWARDED, info)]
    data = without_top_via(msg)
    return [Forward(data, destination, listener_for(cfg, destination), None, Cause.RESPONSE, info)]


# ------------------------------------------------------------------------- shared pieces


def listener_for(cfg: Config, destination: Address) -> Address | None:
    """The socket to send from: for a UDP upstream, our upstream-facing socket of its address
    family; else a listener of the destination's transport and address family."""
    v6 = ":" in destination.host
    if (
        destination.transport is Transport.UDP
        and (destination.host, destination.port) in cfg.upstream_endpoints
    ):
        for own in cfg.upstream_sockets:
            if (":" in own.host) == v6:
                return own
    fallback: Address | None = None
    for listener in cfg.listeners:
        if (":" in listener.host) != v6:
            continue
        if listener.transport is destination.transport:
            return listener
        if fallback is None:
            fallback = listener
    return fallback if destination.transport.is_stream else None
