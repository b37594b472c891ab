"""The admission and routing core: bytes, the socket peer and `now` in; actions out.

Owns: every SIP decision sipguard makes (DESIGN §4, the admission contract), and the RFC 3261
§16 proxy rules applied to what it forwards: Max-Forwards (§16.3 step 3, §16.6 step 3), loop
detection (§16.3 step 4), Proxy-Require (§16.3 step 5), Record-Route (§16.6 step 4, RFC 5658
double record-routing), loose routing (§16.4, §16.12), our Via (§16.6 step 8, §16.11 stateless
branch), response forwarding by Via (§16.7, §18.2.2), CANCEL (§16.10), rport/received
(RFC 3581), Path (RFC 3327).

Never does: I/O, clocks, logging, metrics. The shell calls `handle` for every message, executes
the returned actions, and calls `tick` about once a second. An exception escaping `handle` is a
defect (the shell counts it as `bug`): peer errors become replies or drops here.

Who is who:
- The upstream is any message whose socket peer is a configured upstream address (host and
  port), or arrives on a connection the shell opened to one. Its requests are trusted and routed
  by Route and Request-URI; its responses are relayed like any other.
- Everything else comes from outside and passes admission: source address against the trunks'
  whitelists, then digest where the candidate trunk has credentials.

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
- Replies to sources that no trunk admits are never larger than their request (SECURITY-CASES 8,
  no amplification); the username of a digest answer is not compared with From/To (trunks and
  PBXs commonly authenticate as an account name that is not the caller).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import NamedTuple

from sipguard.auth.credentials import CredentialStore
from sipguard.auth.digest import DigestAnswer, MalformedAnswer, build_challenges, verify
from sipguard.auth.nonce import NonceIssuer, NonceTracker, NonceVerdict
from sipguard.errors import MessageTooLarge, ParseError
from sipguard.policy.guard import Guard, GuardSettings
from sipguard.policy.whitelist import RuleSet, SourceMatcher
from sipguard.proxy.actions import (
    Action,
    Address,
    BanEvent,
    Cause,
    Drop,
    Forward,
    Info,
    Reply,
    Transport,
)
from sipguard.proxy.memory import Admission, ExpiringTable
from sipguard.proxy.routing import (
    BRANCH_PREFIX,
    FLOW_PARAM,
    branch_key,
    checked_destination,
    compute_branch,
    compute_tag,
    default_port,
    flow_token,
    is_our_tag,
    our_uri,
    parse_flow_token,
    transport_of,
    via_value,
)
from sipguard.settings import Settings, Trunk
from sipguard.sip import (
    Edits,
    ParserLimits,
    Request,
    Response,
    build_error_response,
    build_response,
    parse_credentials,
    parse_message,
    parse_uri,
)
from sipguard.sip.fields import SipUri, Via, parse_via

# Methods that create a dialog and so get our Record-Route (RFC 3261 §16.6 step 4; RFC 6665).
DIALOG_CREATING = frozenset({b"INVITE", b"SUBSCRIBE", b"REFER"})
# Headers a client must never set itself: what we attach, and identity the upstream would trust
# as asserted by us (SECURITY-CASES 28, CVE-2020-28361). Matched on the lowercase key.
TRUNK_HEADER = b"X-Sipguard-Trunk"
USER_HEADER = b"X-Sipguard-User"
UNTRUSTED_KEYS = frozenset(
    {b"x-sipguard-trunk", b"x-sipguard-user", b"p-asserted-identity", b"x-authenticated-user"}
)
URI_SCHEMES = frozenset({b"sip", b"sips", b"tel"})
CREDENTIAL_KEYS = frozenset({b"authorization", b"proxy-authorization"})
# How long the core remembers what it admitted (seconds).
INVITE_TRANSACTION_TTL = 200.0  # > Timer C (3 min, RFC 3261 §16.6 step 11): CANCEL may come late
DIALOG_TTL = 4 * 3600.0  # refreshed by every in-dialog request; a call idle for 4 h is forgotten
DIALOG_LINGER = 40.0  # after a BYE: retransmissions of it still pass
RETRY_AFTER = b"5"  # seconds, in 503 for the rate limit
# How long an admitted digest answer is recognised when its request is retransmitted: Timer F
# (64*T1 = 32 s, RFC 3261 §17.1.2.2), the longest a UDP client retransmits a non-INVITE request.
RETRANSMISSION_TTL = 32.0


class _Flow(NamedTuple):
    """Where a request came in (`local`, the listener) and from whom (`source`). A NamedTuple:
    one per message, and a frozen dataclass costs ~5x as much to build."""

    source: Address
    local: Address
    connection: int | None


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _ip_key(host: str) -> str:
    """The address that identifies a source for bans, rate limits and dialogs: IPv4-mapped IPv6
    peers count as the IPv4 address they carry (DESIGN §3)."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _one_via_value(msg: Request) -> bool:
    """Exactly one Via value: one Via header line, no comma in it."""
    if len(msg.indices(b"via")) != 1:
        return False
    value = msg.get(b"via")
    return value is not None and b"," not in value


def _top_two_vias(msg: Response) -> tuple[Via, Via | None]:
    """The top Via and the one below it (None when there is none), as `msg.vias[:2]`.

    A response relayed through us usually carries two Via lines, ours and the client's; only
    those two matter (RFC 3261 §16.7 step 3, §18.2.2), so the common case parses the second
    alone and takes the top one from the parser's fast path (parsing every Via was ~45% of
    relaying a response). Anything else (one line, three or more, a comma list) is parsed in
    full as before, so a malformed Via anywhere is still refused."""
    if len(msg.indices(b"via")) == 2:
        values = msg.get_all(b"via")
        if len(values) == 2 and b"," not in values[0] and b"," not in values[1]:
            return msg.top_via, parse_via(values[1])
    vias = msg.vias
    return vias[0], vias[1] if len(vias) > 1 else None


def _same_uri(digest_uri: bytes, request: Request) -> bool:
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
        self._issuer = NonceIssuer(nonce_key)
        self._branch_key = branch_key(nonce_key)
        self._unique_prefix = (boot_id + b"\x00" * 4)[:4]
        self._counter = 0
        limits = settings.limits
        # Nonces issued before this process started lost their nonce-counts with the old one.
        self._tracker = NonceTracker(
            limits.nonce_table_size, horizon=started_at + settings.auth.nonce_ttl
        )
        self._transactions: ExpiringTable[tuple[str, bytes, bytes], Admission] = ExpiringTable(
            limits.transaction_table_size
        )
        self._dialogs: ExpiringTable[bytes, Admission] = ExpiringTable(
            limits.transaction_table_size
        )
        # Digest answers admitted in the last RETRANSMISSION_TTL seconds, by everything that
        # identifies the request (source, nonce, nc, cnonce, top Via branch, Call-ID, CSeq):
        # a UDP retransmission repeats its nonce-count and must be forwarded again, not refused
        # as a replay (RFC 3261 §16.11: a stateless proxy forwards retransmissions).
        self._answered: ExpiringTable[tuple[str, str, int, str, bytes, bytes, int], bool] = (
            ExpiringTable(limits.transaction_table_size)
        )
        self._events: list[BanEvent] = []
        self._guard: Guard | None = None
        self.reconfigure(settings)

    # ------------------------------------------------------------------ configuration

    def reconfigure(self, settings: Settings) -> None:
        """Apply a new config to new transactions; admitted dialogs and bans stay.

        Atomic: everything is built first, and only then swapped in, so a config that fails to
        compile (an exception from any builder) leaves the running one whole."""
        parser_limits = ParserLimits.from_settings(settings.limits)
        matcher = SourceMatcher.from_trunks(settings.trunks)
        store = CredentialStore.build(settings.trunks, settings.auth.realm, secret=self._nonce_key)
        upstreams = [Address(Transport(u.transport), u.host, u.port) for u in settings.upstream]
        listeners = [Address(Transport(x.transport), x.host, x.port) for x in settings.listen]
        protection = settings.protection
        never_ban = RuleSet.from_texts(protection.never_ban)
        guard_settings = GuardSettings(
            ban_failures=protection.ban_failures,
            ban_window=protection.ban_window,
            ban_duration=protection.ban_duration,
            never_ban=never_ban.__contains__,
            rate=protection.rate,
            burst=protection.burst,
            scanner_user_agents=tuple(protection.scanner_user_agents),
        )
        guard = Guard(guard_settings) if self._guard is None else None
        opaque = self._issuer.opaque(settings.auth.realm)

        # ---- nothing below may fail: the swap
        self.settings = settings
        self.parser_limits = parser_limits
        self._matcher = matcher
        self._store = store
        self._realm = settings.auth.realm
        self._realm_bytes = settings.auth.realm.encode("utf-8")
        self._opaque = opaque
        self._refuse_drop = settings.auth.refuse == "drop"
        self._upstreams = upstreams
        self._upstream_endpoints = {(u.host, u.port) for u in upstreams}
        self._listeners = listeners
        self._own = {(x.host, x.port) for x in listeners}
        if guard is not None:
            self._guard = guard
        else:
            assert self._guard is not None
            self._guard.configure(guard_settings)
        self._rate_drop = protection.rate_action == "drop"

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
        flow = _Flow(source, local, connection)
        from_upstream = (source.host, source.port) in self._upstream_endpoints
        guard = self._guard
        assert guard is not None
        if not from_upstream and guard.is_banned(_ip_key(source.host), now):
            # The cheapest path: no parsing for a banned source (issue 7).
            return [Drop(Cause.BANNED)]
        try:
            msg = parse_message(data, self.parser_limits)
        except ParseError as exc:
            return self._on_parse_error(exc, data, flow, from_upstream)
        try:
            if isinstance(msg, Response):
                return self._on_response(msg, now)
            if from_upstream:
                return self._on_upstream_request(msg, flow, now)
            return self._on_client_request(msg, flow, now)
        except ParseError as exc:
            # A header parsed on demand (Via, From, URI...) was malformed.
            return self._on_parse_error(exc, data, flow, from_upstream, msg)

    def upstream_failed(self, forward: Forward, now: float) -> list[Action]:
        """A Forward could not be delivered (refused, unreachable, TLS failure, connection lost):
        answer the request's sender `503` through the normal response path, so nothing lingers.
        Relayed responses and ACKs that could not be delivered are simply lost (RFC 3261 §17)."""
        try:
            msg = parse_message(forward.data, self.parser_limits)
        except ParseError:
            return [Drop(Cause.UPSTREAM_ERROR)]
        if not isinstance(msg, Request) or msg.method in (b"ACK", b"CANCEL"):
            return [Drop(Cause.UPSTREAM_ERROR, Info(detail="relay not delivered"))]
        try:
            reply = build_response(
                msg,
                503,
                b"Service Unavailable",
                to_tag=self._tag(msg),
                extra_headers=((b"Retry-After", RETRY_AFTER),),
            )
            response = parse_message(reply, self.parser_limits)
            assert isinstance(response, Response)
            actions = self._on_response(response, now)
        except ParseError:
            return [Drop(Cause.UPSTREAM_ERROR)]
        return [
            Forward(a.data, a.to, a.local, a.connection, Cause.UPSTREAM_ERROR, a.info)
            if isinstance(a, Forward)
            else a
            for a in actions
        ]

    def tick(self, now: float) -> list[BanEvent]:
        """Housekeeping: expire memory and bans; returns ban and unban events to log."""
        guard = self._guard
        assert guard is not None
        self._transactions.sweep(now)
        self._dialogs.sweep(now)
        events, self._events = self._events, []
        for unban in guard.expire(now):
            events.append(BanEvent(unban.ip, 0.0))
        return events

    @property
    def active_bans(self) -> int:
        guard = self._guard
        assert guard is not None
        return guard.active_bans()

    # ------------------------------------------------------------------ errors

    def _on_parse_error(
        self,
        exc: ParseError,
        data: bytes,
        flow: _Flow,
        from_upstream: bool,
        msg: Request | Response | None = None,
    ) -> list[Action]:
        cause = Cause.TOO_LARGE if isinstance(exc, MessageTooLarge) else Cause.PARSE_ERROR
        info = Info(status=exc.status, detail=exc.detail[:120])
        if isinstance(msg, Response):
            return [Drop(cause, info)]  # a broken response is never answered (RFC 4475 3.1.2.5)
        reply: bytes | None = None
        try:
            if isinstance(msg, Request):
                if msg.method == b"ACK":
                    return [Drop(cause, info)]
                reply = build_response(
                    msg, exc.status, exc.reason.encode("ascii"), to_tag=self._tag(msg)
                )
            elif exc.routable:
                recovered = exc.headers
                if getattr(recovered, "method", b"ACK") == b"ACK":
                    return [Drop(cause, info)]
                reply = build_error_response(exc, to_tag=b"sgerr")
        except ParseError:
            reply = None
        if reply is None:
            return [Drop(cause, info)]
        unknown = not from_upstream and not self._matcher.candidates(flow.source.host)
        if unknown and (self._refuse_drop or len(reply) > len(data)):
            return [Drop(cause, info)]
        return [Reply(reply, flow.source, flow.local, flow.connection, cause, info)]

    # ------------------------------------------------------------------ responses

    def _on_response(self, msg: Response, now: float) -> list[Action]:
        """RFC 3261 §16.7: relay a response whose top Via is ours, to the flow recorded in it."""
        top, below = _top_two_vias(msg)
        info = Info(_text(msg.cseq.method), _text(msg.call_id), "", "", msg.status)
        branch = top.branch
        if branch is None or not branch.startswith(BRANCH_PREFIX) or below is None:
            return [Drop(Cause.STRAY, info)]
        token = top.param(FLOW_PARAM)
        destination = parse_flow_token(token) if token else None
        if destination is None:
            return [Drop(Cause.STRAY, info)]
        expected = self._branch(below, msg.call_id, msg.from_.tag, msg.cseq.number, destination)
        if not hmac.compare_digest(expected, branch):
            return [Drop(Cause.STRAY, info)]  # a forged or foreign Via (SECURITY-CASES 34)
        if msg.cseq.method == b"CANCEL":
            # We answered the CANCEL ourselves (§16.10); the next hop's 200 ends here.
            return [Drop(Cause.CANCEL_FORWARDED, info)]
        data = Edits(msg).remove_top_via().build()
        local = self._listener_for(destination)
        return [Forward(data, destination, local, None, Cause.RESPONSE, info)]

    # ------------------------------------------------------------------ from the upstream

    def _on_upstream_request(self, msg: Request, flow: _Flow, now: float) -> list[Action]:
        """Requests from the upstream are trusted: routed by Route, else Request-URI (§16.4)."""
        info = Info(_text(msg.method), _text(msg.call_id))
        if msg.method != b"ACK" and msg.max_forwards <= 0:
            return [self._reply(msg, flow, 483, b"Too Many Hops", Cause.TOO_MANY_HOPS, info)]
        popped, flow_hint = self._our_routes(msg)
        destination = flow_hint or self._route_destination(msg, popped)
        if destination is None:
            return [self._reply(msg, flow, 404, b"Not Found", Cause.FROM_UPSTREAM, info)]
        out_local = self._listener_for(destination)
        if out_local is None:
            return [self._reply(msg, flow, 503, b"Service Unavailable", Cause.FROM_UPSTREAM, info)]
        edits = Edits(msg)
        for _ in range(popped):
            edits.remove_first_route()
        if msg.method != b"ACK":
            edits.replace_max_forwards(msg.max_forwards - 1)
        if msg.method in DIALOG_CREATING and not msg.to.tag:
            edits.insert_headers(
                self._record_routes(b"Record-Route", flow.local, out_local, destination)
            )
            self._dialogs.put(
                msg.call_id, Admission(_ip_key(destination.host), "", ""), now + DIALOG_TTL
            )
        elif msg.method == b"BYE":
            self._dialogs.expire_at_most(msg.call_id, now + DIALOG_LINGER)
        edits.prepend_via(
            via_value_with_flow(out_local, self._branch_for(msg, flow.source), flow.source)
        )
        actions: list[Action] = []
        if msg.method == b"CANCEL":
            actions.append(self._reply(msg, flow, 200, b"OK", Cause.CANCEL_FORWARDED, info))
        data = edits.build()
        actions.append(Forward(data, destination, out_local, None, Cause.FROM_UPSTREAM, info))
        return actions

    def _route_destination(self, msg: Request, popped: int) -> Address | None:
        routes = msg.routes
        if len(routes) > popped:
            return self._uri_destination(routes[popped].uri)
        return self._uri_destination(msg.request_uri)

    def _uri_destination(self, uri: SipUri) -> Address | None:
        """RFC 3263 without DNS: an IP-literal SIP URI's transport, host and port."""
        if not uri.is_sip or not uri.host:
            return None
        name = uri.param(b"transport")
        if uri.scheme == b"sips":
            transport: Transport | None = Transport.TLS
        elif name is None:
            transport = Transport.UDP
        else:
            transport = transport_of(_text(name))
        if transport is None:
            return None
        port = uri.port or default_port(transport)
        return checked_destination(transport, _text(uri.host), port)

    # ------------------------------------------------------------------ from outside

    def _on_client_request(self, msg: Request, flow: _Flow, now: float) -> list[Action]:
        guard = self._guard
        assert guard is not None
        method = msg.method
        source = flow.source
        ip = _ip_key(source.host)
        info = Info(_text(method), _text(msg.call_id))
        if guard.is_scanner(msg.user_agent):
            return [Drop(Cause.SCANNER, info)]

        if method == b"ACK":
            return self._on_ack(msg, flow, now, info)
        if method == b"CANCEL":
            return self._on_cancel(msg, flow, now, info)

        to_tag = msg.to.tag
        if to_tag:
            dialog = self._dialogs.get(msg.call_id, now)
            if dialog is not None and dialog.source_ip == ip:
                self._dialogs.touch(msg.call_id, now + DIALOG_TTL)
                if method == b"BYE":
                    self._dialogs.expire_at_most(msg.call_id, now + DIALOG_LINGER)
                info = Info(info.method, info.call_id, dialog.trunk, dialog.user)
                return self._forward_upstream(msg, flow, now, Cause.IN_DIALOG, info)

        candidates = self._matcher.candidates(source.host)
        if not candidates:
            return self._refuse(msg, flow, Cause.ACL_DENIED, info, now)

        refusal = self._sanity(msg, flow, info)
        if refusal is not None:
            return refusal

        if method == b"OPTIONS" and self._is_for_us(msg):
            return [self._reply(msg, flow, 200, b"OK", Cause.OPTIONS_ANSWERED, info)]

        for trunk in candidates:
            if not trunk.requires_auth:
                info = Info(info.method, info.call_id, trunk.name)
                return self._forward_upstream(msg, flow, now, Cause.ADMITTED_IP, info)
        return self._authenticate(msg, flow, now, candidates, info)

    def _on_ack(self, msg: Request, flow: _Flow, now: float, info: Info) -> list[Action]:
        """ACK is never challenged (RFC 3261 §22.1): it is absorbed when it acknowledges our own
        reply, forwarded when it belongs to an admitted transaction or dialog, else dropped."""
        if is_our_tag(msg.to.tag):
            return [Drop(Cause.ACK_ABSORBED, info)]
        ip = _ip_key(flow.source.host)
        admitted = self._transactions.get(self._transaction_key(msg, ip), now)
        if admitted is None:
            dialog = self._dialogs.get(msg.call_id, now)
            if dialog is None or dialog.source_ip != ip:
                return [Drop(Cause.STRAY, info)]
            admitted = dialog
        info = Info(info.method, info.call_id, admitted.trunk, admitted.user)
        return self._forward_upstream(msg, flow, now, Cause.IN_DIALOG, info)

    def _on_cancel(self, msg: Request, flow: _Flow, now: float, info: Info) -> list[Action]:
        """RFC 3261 §16.10: answer 200 ourselves and send the CANCEL on the INVITE's branch."""
        ip = _ip_key(flow.source.host)
        admitted = self._transactions.get(self._transaction_key(msg, ip), now)
        if admitted is None:
            return [Drop(Cause.STRAY, info)]  # no state for an unknown CANCEL (SECURITY-CASES 34)
        info = Info(info.method, info.call_id, admitted.trunk, admitted.user)
        ok = self._reply(msg, flow, 200, b"OK", Cause.CANCEL_FORWARDED, info)
        return [ok, *self._forward_upstream(msg, flow, now, Cause.CANCEL_FORWARDED, info)]

    def _sanity(self, msg: Request, flow: _Flow, info: Info) -> list[Action] | None:
        """RFC 3261 §16.3 request validation, once the source is known to be allowed."""
        scheme = msg.request_uri.scheme
        if scheme not in URI_SCHEMES:
            return [
                self._reply(
                    msg, flow, 416, b"Unsupported URI Scheme", Cause.UNSUPPORTED_URI_SCHEME, info
                )
            ]
        if msg.max_forwards <= 0:
            return [self._reply(msg, flow, 483, b"Too Many Hops", Cause.TOO_MANY_HOPS, info)]
        proxy_require = msg.get_all(b"proxy-require")
        if proxy_require:
            # We support no extension that a proxy must understand (RFC 3261 §16.3 step 5).
            unsupported = b", ".join(v.strip() for v in proxy_require)
            return [
                self._reply(
                    msg,
                    flow,
                    420,
                    b"Bad Extension",
                    Cause.BAD_EXTENSION,
                    info,
                    extra=((b"Unsupported", unsupported),),
                )
            ]
        if _one_via_value(msg):
            # Nothing below us to loop through (§16.3 step 4 looks at every Via): the top Via
            # (read on the parser's fast path, or parsed, and refused if malformed, as before)
            # is the only one, and the full Via list is not parsed a second time.
            _ = msg.top_via
            return None
        vias = msg.vias
        if len(vias) > 1:
            for via in vias:
                branch = via.branch
                if (
                    branch is not None
                    and branch.startswith(BRANCH_PREFIX)
                    and (_text(via.host), via.port or 5060) in self._own
                ):
                    return [
                        self._reply(msg, flow, 482, b"Loop Detected", Cause.LOOP_DETECTED, info)
                    ]
        return None

    def _is_for_us(self, msg: Request) -> bool:
        uri = msg.request_uri
        if uri.user or not uri.is_sip:
            return False
        return (_text(uri.host), uri.port or 5060) in self._own and not msg.get_all(b"route")

    # ------------------------------------------------------------------ digest

    def _authenticate(
        self,
        msg: Request,
        flow: _Flow,
        now: float,
        candidates: Sequence[Trunk],
        info: Info,
    ) -> list[Action]:
        """DESIGN §4 step 3. REGISTER answers a 401 in Authorization, the rest a 407 in
        Proxy-Authorization (RFC 3261 §22.2, §22.3)."""
        guard = self._guard
        assert guard is not None
        key = b"authorization" if msg.method == b"REGISTER" else b"proxy-authorization"
        ours = []
        # What each credential header turned out to be, so that forwarding strips ours without
        # parsing them a second time (the digest parse is the dearest step of a verify).
        parsed: dict[int, bool] = {}
        for index in msg.indices(key):
            credentials = parse_credentials(msg.headers[index].value)
            mine = credentials.is_digest and credentials.params.get("realm") == self._realm
            parsed[index] = mine
            if mine:
                ours.append(credentials)
        source_ip = _ip_key(flow.source.host)
        if len(ours) > 1:
            # Two answers for one realm: never pick one (SECURITY-CASES 11).
            return [
                self._reply(
                    msg,
                    flow,
                    400,
                    b"Duplicate Credentials",
                    Cause.PARSE_ERROR,
                    info,
                )
            ]
        algorithms = self._algorithms(candidates)
        if not ours:
            return self._challenge(msg, flow, now, algorithms, False, Cause.CHALLENGED, info)
        try:
            answer = DigestAnswer.from_params(ours[0].params, latin1=True)
        except MalformedAnswer as exc:
            info = Info(info.method, info.call_id, detail=str(exc)[:80])
            return self._challenge(msg, flow, now, algorithms, False, Cause.CHALLENGED, info)
        if answer.algorithm not in algorithms or answer.qop != "auth":
            info = Info(info.method, info.call_id, detail="algorithm or qop not offered")
            return self._challenge(msg, flow, now, algorithms, False, Cause.CHALLENGED, info)

        # The same work whatever the outcome: look up, hash, compare (SECURITY-CASES 26).
        entry = self._store.lookup(answer.username, answer.algorithm, [t.name for t in candidates])
        ha1 = entry.ha1 if entry is not None else self._store.dummy_ha1(answer.algorithm)
        correct = verify(answer, ha1, _text(msg.method), msg.body)
        verdict, nonce_expiry = self._issuer.check_with_expiry(
            answer.nonce, self._realm, source_ip, now
        )
        user = answer.username[:64]

        failure: str | None = None
        if verdict is NonceVerdict.INVALID:
            failure = "nonce not issued to this source"
        elif entry is None:
            failure = "unknown user"
        elif not correct:
            failure = "wrong password"
        elif not entry.valid_at(now):
            failure = "credential expired"
        elif not _same_uri(answer.uri.encode("utf-8"), msg):
            failure = "digest uri differs from the Request-URI"
        elif answer.opaque is not None and not self._issuer.check_opaque(
            answer.opaque, self._realm
        ):
            failure = "opaque not ours"
        elif verdict is NonceVerdict.STALE:
            # A right answer to an expired nonce: a new challenge, no failure (RFC 7616 §3.3).
            info = Info(info.method, info.call_id, "", user)
            return self._challenge(msg, flow, now, algorithms, True, Cause.STALE_NONCE, info)
        else:
            retransmission = self._retransmission_key(msg, source_ip, answer)
            if self._answered.get(retransmission, now) is None:
                if nonce_expiry is None or not self._tracker.accept(
                    answer.nonce, answer.nonce_count, nonce_expiry, now
                ):
                    failure = "nonce-count replayed"
                else:
                    self._answered.put(retransmission, True, now + RETRANSMISSION_TTL)
        if failure is not None:
            if verdict is NonceVerdict.VALID and not correct and nonce_expiry is not None:
                # A cracker reuses one nonce for many guesses: one wrong answer kills it.
                self._tracker.kill(answer.nonce, nonce_expiry, now)
            ban = guard.record_failure(source_ip, now)
            if ban is not None:
                self._events.append(BanEvent(ban.ip, ban.until, ban.failures))
            info = Info(info.method, info.call_id, "", user, 0, failure)
            return self._refuse(msg, flow, Cause.AUTH_FAILED, info, now, counted=True)
        assert entry is not None
        guard.record_success(source_ip, now)
        info = Info(info.method, info.call_id, entry.trunk, answer.username)
        return self._forward_upstream(msg, flow, now, Cause.ADMITTED_DIGEST, info, parsed)

    @staticmethod
    def _retransmission_key(
        msg: Request, source_ip: str, answer: DigestAnswer
    ) -> tuple[str, str, int, str, bytes, bytes, int]:
        """What a retransmission repeats and a new request changes (RFC 3261 §17.2.3 matching
        plus the digest answer): the same key twice is one request sent twice."""
        return (
            source_ip,
            answer.nonce,
            answer.nonce_count,
            answer.cnonce or "",
            msg.top_via.branch or b"",
            msg.call_id,
            msg.cseq.number,
        )

    def _algorithms(self, candidates: Sequence[Trunk]) -> tuple[str, ...]:
        """The challenge order: the first credential trunk's, then the others' (DESIGN §3)."""
        default = self.settings.auth.algorithms
        seen: list[str] = []
        for trunk in candidates:
            if trunk.requires_auth:
                for algorithm in trunk.algorithms or default:
                    if algorithm not in seen:
                        seen.append(algorithm)
        return tuple(seen) or default

    def _challenge(
        self,
        msg: Request,
        flow: _Flow,
        now: float,
        algorithms: Sequence[str],
        stale: bool,
        cause: Cause,
        info: Info,
    ) -> list[Action]:
        guard = self._guard
        assert guard is not None
        if not guard.allow_request(_ip_key(flow.source.host), now):
            return self._rate_limited(msg, flow, info)
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        unique = self._unique_prefix + self._counter.to_bytes(4, "big")
        nonce = self._issuer.issue(
            self._realm, _ip_key(flow.source.host), now, self.settings.auth.nonce_ttl, unique
        )
        values = build_challenges(self._realm, nonce, self._opaque, algorithms, stale)
        if msg.method == b"REGISTER":
            status, reason, name = 401, b"Unauthorized", b"WWW-Authenticate"
        else:
            status, reason, name = 407, b"Proxy Authentication Required", b"Proxy-Authenticate"
        extra = tuple((name, value) for value in values)
        return [self._reply(msg, flow, status, reason, cause, info, extra=extra)]

    def _rate_limited(self, msg: Request, flow: _Flow, info: Info) -> list[Action]:
        if self._rate_drop:
            return [Drop(Cause.RATE_LIMITED, info)]
        return [
            self._reply(
                msg,
                flow,
                503,
                b"Service Unavailable",
                Cause.RATE_LIMITED,
                info,
                extra=((b"Retry-After", RETRY_AFTER),),
            )
        ]

    def _refuse(
        self,
        msg: Request,
        flow: _Flow,
        cause: Cause,
        info: Info,
        now: float,
        *,
        counted: bool = False,
    ) -> list[Action]:
        """`403 Forbidden` or silence (auth.refuse), never larger than the request."""
        guard = self._guard
        assert guard is not None
        if self._refuse_drop:
            return [Drop(cause, info)]
        if not counted and not guard.allow_request(_ip_key(flow.source.host), now):
            return [Drop(Cause.RATE_LIMITED, info)]
        reply = self._reply(msg, flow, 403, b"Forbidden", cause, info)
        if len(reply.data) > len(msg.raw):
            return [Drop(cause, info)]
        return [reply]

    # ------------------------------------------------------------------ forwarding

    def _forward_upstream(
        self,
        msg: Request,
        flow: _Flow,
        now: float,
        cause: Cause,
        info: Info,
        credentials: dict[int, bool] | None = None,
    ) -> list[Action]:
        """RFC 3261 §16.6: our Via, Max-Forwards, Record-Route/Path, credentials for our realm
        and identity headers removed, ours attached; always to the primary upstream.

        `credentials`: header index -> "is a credential for our realm", for the headers
        `_authenticate` already parsed; the others are parsed here."""
        if msg.max_forwards <= 0:
            if msg.method == b"ACK":
                return [Drop(Cause.TOO_MANY_HOPS, info)]
            return [self._reply(msg, flow, 483, b"Too Many Hops", Cause.TOO_MANY_HOPS, info)]
        if not self._upstreams:
            return [self._reply(msg, flow, 503, b"Service Unavailable", Cause.UPSTREAM_ERROR, info)]
        destination = self._upstreams[0]
        out_local = self._listener_for(destination)
        via_local = out_local or self._listeners[0]
        popped, _hint = self._our_routes(msg)
        method = msg.method
        edits = Edits(msg)
        received = self._received_params(msg.top_via, flow.source)
        if received:
            edits.set_top_via_params(received)
        edits.prepend_via(
            via_value_with_flow(via_local, self._branch_for(msg, flow.source), flow.source)
        )
        for _ in range(popped):
            edits.remove_first_route()
        if method != b"ACK":
            edits.replace_max_forwards(msg.max_forwards - 1)
        if method in DIALOG_CREATING and not msg.to.tag:
            edits.insert_headers(
                self._record_routes(b"Record-Route", via_local, flow.local, flow.source)
            )
        elif method == b"REGISTER":
            edits.insert_headers(self._record_routes(b"Path", via_local, flow.local, flow.source))
        known = credentials or {}
        edits.remove_header_lines(
            i
            for i, header in enumerate(msg.headers)
            if header.key in UNTRUSTED_KEYS
            or (
                known[i]
                if i in known
                else header.key in CREDENTIAL_KEYS and self._is_our_credential(header.value)
            )
        )
        self._unfold(msg, edits)
        end = len(msg.headers)
        if info.trunk:
            edits.insert(end, TRUNK_HEADER + b": " + info.trunk.encode("utf-8"))
        if info.user:
            edits.insert(end, USER_HEADER + b": " + info.user.encode("utf-8", "replace"))
        data = edits.build()
        admission = Admission(_ip_key(flow.source.host), info.trunk, info.user)
        if method == b"INVITE":
            key = self._transaction_key(msg, admission.source_ip)
            self._transactions.put(key, admission, now + INVITE_TRANSACTION_TTL)
        if method in DIALOG_CREATING and not msg.to.tag:
            self._dialogs.put(msg.call_id, admission, now + DIALOG_TTL)
        return [Forward(data, destination, out_local, None, cause, info)]

    @staticmethod
    def _unfold(msg: Request, edits: Edits) -> None:
        """Forward folded header lines (obsolete line folding, RFC 3261 §7.3.1) unfolded, as we
        read them, so that no upstream parser can read them otherwise (SECURITY-CASES 10)."""
        raw = msg.raw
        end = msg.header_end
        if raw.find(b"\r\n ", 0, end) < 0 and raw.find(b"\r\n\t", 0, end) < 0:
            return
        for i, header in enumerate(msg.headers):
            if raw.find(b"\r\n", header.start, header.end - 2) >= 0:
                edits.set_value(i, edits.value(i))

    def _is_our_credential(self, value: bytes) -> bool:
        """An Authorization / Proxy-Authorization value holding a digest answer for our realm."""
        try:
            credentials = parse_credentials(value)
        except ParseError:
            return False
        return credentials.is_digest and credentials.params.get("realm") == self._realm

    def _received_params(self, via: Via, source: Address) -> list[tuple[bytes, bytes | None]]:
        """RFC 3261 §18.2.1 received, RFC 3581 §4 rport, on the sender's Via."""
        params: list[tuple[bytes, bytes | None]] = []
        host = source.host.encode("ascii")
        if via.host != host:
            params.append((b"received", host))
        if via.has_rport:
            if via.host == host:
                params.append((b"received", host))
            params.append((b"rport", b"%d" % source.port))
        return params

    def _our_routes(self, msg: Request) -> tuple[int, Address | None]:
        """How many Route values at the top name us (RFC 3261 §16.4), and the client flow that
        one of them carries (our Record-Route/Path from the client-facing side)."""
        if msg.indices(b"route") == []:
            return 0, None
        count = 0
        hint: Address | None = None
        for route in msg.routes:
            uri = route.uri
            if not uri.is_sip or (_text(uri.host), uri.port or 5060) not in self._own:
                break
            count += 1
            token = uri.param(FLOW_PARAM)
            if token and hint is None:
                hint = parse_flow_token(token)
        return count, hint

    def _record_routes(
        self, name: bytes, toward_next: Address, toward_prev: Address, prev: Address
    ) -> list[tuple[bytes, bytes]]:
        """One Record-Route (or Path) entry, or two when the two sides differ in transport or
        address family (RFC 5658): the top one faces the next hop, the other the previous one
        and carries the previous hop's flow so that requests back reach it."""
        if toward_next == toward_prev:
            return [(name, our_uri(toward_prev, prev))]
        return [(name, our_uri(toward_next, None)), (name, our_uri(toward_prev, prev))]

    def _listener_for(self, destination: Address) -> Address | None:
        """The listener to send from: same transport and address family as the destination."""
        v6 = ":" in destination.host
        fallback: Address | None = None
        for listener in self._listeners:
            if (":" in listener.host) != v6:
                continue
            if listener.transport is destination.transport:
                return listener
            if fallback is None:
                fallback = listener
        return fallback if destination.transport.is_stream else None

    # ------------------------------------------------------------------ building blocks

    def _branch(
        self,
        prev: Via,
        call_id: bytes,
        from_tag: bytes | None,
        cseq_number: int,
        flow: Address,
    ) -> bytes:
        return compute_branch(
            self._branch_key,
            prev.branch,
            prev.sent_by + b"\x00" + flow_token(flow),
            call_id,
            from_tag,
            cseq_number,
        )

    def _branch_for(self, msg: Request, source: Address) -> bytes:
        return self._branch(msg.top_via, msg.call_id, msg.from_.tag, msg.cseq.number, source)

    def _transaction_key(self, msg: Request, ip: str) -> tuple[str, bytes, bytes]:
        """INVITE, its CANCEL and its non-2xx ACK share the top Via branch (RFC 3261 §17.2.3)."""
        via = msg.top_via
        return (ip, via.branch or b"%d" % msg.cseq.number, msg.call_id)

    def _tag(self, msg: Request) -> bytes:
        return compute_tag(self._branch_key, msg.call_id, msg.from_.tag, msg.top_via.branch)

    def _reply(
        self,
        msg: Request,
        flow: _Flow,
        status: int,
        reason: bytes,
        cause: Cause,
        info: Info,
        *,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> Reply:
        data = build_response(msg, status, reason, to_tag=self._tag(msg), extra_headers=extra)
        info = Info(info.method, info.call_id, info.trunk, info.user, status, info.detail)
        return Reply(data, flow.source, flow.local, flow.connection, cause, info)


def via_value_with_flow(local: Address, branch: bytes, flow: Address) -> bytes:
    """Our Via, carrying the flow the answer must go back to (covered by the branch's MAC)."""
    return via_value(local, branch) + b";" + FLOW_PARAM + b"=" + flow_token(flow)
