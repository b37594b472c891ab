"""Route and Record-Route: the entries that name us (RFC 3261 §16.4), the ones we insert
(§16.6 step 4; RFC 5658 double record-routing; RFC 3327 Path), and where a request routed by
them goes.

Owns: counting the Route values at the top of a request that name one of our listeners or
upstream-facing sockets and reading the client flow our Record-Route carries, from the parsed
Route list (`our_routes`) or from the lines a fast-path request's scan found (`found_routes`,
where a value written as we write our Record-Route, `Config.route_to_us`, needs no parsing);
our Record-Route values; the next hop named by Route or Request-URI.

Never does: I/O, edit bytes (outgoing.py writes), trust a URI to name an address unchecked
(via.py checks destinations).
"""

from __future__ import annotations

from sipguard.proxy.actions import Address
from sipguard.proxy.context import Config
from sipguard.proxy.outgoing import Line
from sipguard.proxy.replies import text
from sipguard.proxy.via import FLOW_PARAM, flow_token, parse_flow_token, uri_destination
from sipguard.sip import Request
from sipguard.sip.lists import split_list
from sipguard.sip.values import NameAddr


def our_routes(cfg: Config, msg: Request) -> tuple[int, Address | None]:
    """How many Route values at the top name us (RFC 3261 §16.4), and the client flow that
    one of them carries (our Record-Route/Path from the client-facing side)."""
    if msg.indices(b"route") == []:
        return 0, None
    return _our_routes(cfg, msg.routes)


def _our_routes(cfg: Config, routes: list[NameAddr]) -> tuple[int, Address | None]:
    count = 0
    hint: Address | None = None
    for route in routes:
        uri = route.uri
        if not uri.is_sip or (text(uri.host), uri.port or 5060) not in cfg.own:
            break
        count += 1
        token = uri.param(FLOW_PARAM)
        if token and hint is None:
            hint = parse_flow_token(token)
    return count, hint


def record_routes(
    cfg: Config, name: bytes, toward_next: Address, toward_prev: Address, prev: Address
) -> list[tuple[bytes, bytes]]:
    """One Record-Route (or Path) entry, or two when the two sides differ in transport or
    address family (RFC 5658): the top one faces the next hop, the other the previous one
    and carries the previous hop's flow so that requests back reach it."""
    fragments = cfg.fragments
    back = fragments[toward_prev.transport, toward_prev.host, toward_prev.port]
    if toward_next == toward_prev:
        return [(name, back.uri(flow_token(prev)))]
    ahead = fragments[toward_next.transport, toward_next.host, toward_next.port]
    return [(name, ahead.uri(None)), (name, back.uri(flow_token(prev)))]


def found_routes(cfg: Config, msg: Request, found: list[Line]) -> tuple[int, Address | None]:
    """`our_routes` for the Route lines a fast-path request's scan found: an element written
    as we write our Record-Route (`Config.route_to_us`) names us without being parsed; the
    others are read as `Message.routes` reads them (each validated), and the first that does
    not name us ends the count."""
    count = 0
    counting = True
    hint: Address | None = None
    route_to_us, limit = cfg.route_to_us.fullmatch, msg.limits_uri
    for line in found:
        if line.key != b"route":
            continue
        value = line.value
        for element in [value] if value.find(b",") < 0 else split_list(value):
            ours = route_to_us(element) if len(element) <= limit else None
            if ours is not None:
                if counting:
                    count += 1
                    token = ours.group(1)
                    if token and hint is None:
                        hint = parse_flow_token(token)
                continue
            route = NameAddr(element, limit)  # validated, as msg.routes would
            if counting:
                named, flow = _our_routes(cfg, [route])
                count += named
                counting = bool(named)
                hint = hint or flow
    return count, hint


def route_destination(msg: Request, popped: int) -> Address | None:
    """The next hop of a request from the upstream whose first `popped` Route values name us:
    the next Route value, else the Request-URI (RFC 3261 §16.4, §16.12)."""
    routes = msg.routes
    if len(routes) > popped:
        return uri_destination(routes[popped].uri)
    return uri_destination(msg.request_uri)
