"""The bytes of a forwarded request, written once: a plan of cuts over the received bytes.

Owns: turning the decided changes of a request admitted from outside (our Via, received/rport on
the sender's Via, Max-Forwards, Record-Route or Path, Route entries naming us, stripped lines,
unfolded lines, attached lines) into the outgoing bytes with ONE join over slices of `msg.raw`
and prebuilt fragments (`Fragments`, built per listener when the config is loaded). Placement
is the one `sip.edit` documents: our Via right before the first Via line, Record-Route/Path
before the first line of the same name or right after the start line, Max-Forwards replaced in
place (appended when absent), attached lines at the end of the header section; lines inserted at
one place keep the order in which they are decided. RFC 3261 §16.6 steps 3, 4, 8; §18.2.1;
RFC 3581 §4; RFC 3327; RFC 5658.

Where the positions come from: a message read on the parser's fast path gets them from the
parser's match (top Via, Max-Forwards) and, when `needs_index` finds lines to edit or strip
(Route, Record-Route, Path, credentials, identity headers), from one scan for those lines
(`edited_lines`); a message read on the general path from its header index. They give the same
bytes (tests/unit/proxy/test_outgoing.py compares them with the edit-by-edit writer on the
corpora and on generated requests, test_forward_scan.py the scan with the header index).

Never does: decide anything (what changes is given), I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import NamedTuple

from sipguard.errors import ParseError
from sipguard.proxy.actions import Address, Transport
from sipguard.proxy.via import FLOW_PARAM, hostport
from sipguard.sip import Request
from sipguard.sip.lists import list_spans
from sipguard.sip.names import canonical_key
from sipguard.sip.params import via_param_spans

CRLF = b"\r\n"
# Headers whose presence sends a request to the indexed writer: lines we remove or edit beyond
# the Via and Max-Forwards the parser's match locates (RFC 3261 header names have no compact
# form among these), and the lines a request from outside loses, which depend on the config
# (`identity.InboundFilter.alternation`). Matched at a line start, any case.
_EDITED = rb"route|record-route|path|proxy-require|authorization|proxy-authorization"


def needs_index(stripped: bytes) -> re.Pattern[bytes]:
    """The pattern of a request that needs its header index, given the alternation of the
    header names a request from outside loses (built once per config). Group 1: the name as
    received; group 2: the value (on the fast path a line holds its whole value)."""
    return re.compile(
        rb"\n(" + _EDITED + rb"|" + stripped + rb")[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
    )


class Line(NamedTuple):
    """A header line found by `needs_index` on the fast path: its span in `raw` (CRLF
    excluded), its name as received, its key (`canonical_key`) and its value (trailing LWS off,
    as the header index holds it)."""

    start: int
    end: int
    name: bytes
    key: bytes
    value: bytes


# Lines the writer edits through the parser's match: a config stripping one of them (an
# `identity.strip_inbound` entry) sends the request to the indexed writer.
_MATCHED_KEYS = frozenset({b"via", b"max-forwards"})


def edited_lines(msg: Request, pattern: re.Pattern[bytes]) -> list[Line] | None:
    """The lines `pattern` (`needs_index`) finds in a request read on the parser's fast path
    (Route, Record-Route, Path, credentials, lines a request from outside loses), in order:
    with them `write_plain` writes the request without a header index. None when one of them
    is a line the writer edits through the match (the indexed writer)."""
    lines: list[Line] = []
    for m in pattern.finditer(msg.raw, msg.start_line_end - 1, msg.header_end):
        name, value = m.groups()
        key = canonical_key(name)
        if key in _MATCHED_KEYS:
            return None
        start, end = m.span()  # from the LF before the name
        lines.append(Line(start + 1, end, name, key, value.rstrip(b" \t")))
    return lines


def route_to_us(fragments: Iterable[Fragments]) -> re.Pattern[bytes]:
    """Our Record-Route and Path values as we write them (`Fragments.uri_head`, then our flow
    token or not), for every listener and upstream-facing socket: a Route element it matches in
    full names us (RFC 3261 §16.4) and is a valid name-addr by construction, so it is
    recognised without parsing; group 1 is the flow token. A name not written in lower case is
    left out (its URIs are parsed as any other)."""
    heads = [re.escape(x.uri_head) for x in fragments if x.uri_head == x.uri_head.lower()] or [
        rb"(?!)"
    ]
    return re.compile(
        rb"(?:" + rb"|".join(heads) + rb")(?:;" + FLOW_PARAM + rb"=([A-Za-z0-9.:\-]+))?>"
    )


# The first User-Agent value of a request on the fast path (the scanner check reads no index).
USER_AGENT = re.compile(rb"\nUser-Agent[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE)


class Fragments(NamedTuple):
    """What our lines start with for one listener or upstream-facing socket, built when the
    config is loaded, naming the address peers reach it at (`Listener.advertise`, else the
    socket's own): every Via, Record-Route and Path of ours is written from these."""

    via_head: bytes  # b"Via: SIP/2.0/UDP host:port;branch="
    via_tail: bytes  # b";rport;sgf=" (UDP) or b";sgf="
    uri_head: bytes  # b"<sip:host:port;transport=udp;lr"

    def via(self, branch: bytes, token: bytes) -> bytes:
        """Our Via value (without `Via: `), carrying the flow `token` (`via.flow_token`)."""
        return self.via_head[5:] + branch + self.via_tail + token

    def uri(self, token: bytes | None) -> bytes:
        """Our Record-Route or Path value, with the flow `token` or without."""
        if token is None:
            return self.uri_head + b">"
        return self.uri_head + b";" + FLOW_PARAM + b"=" + token + b">"


def fragments_for(socket: Address, named: tuple[str, int]) -> Fragments:
    """The fragments of the socket `socket`, naming `named` (host, port)."""
    transport = socket.transport.value.encode("ascii")
    rport = b";rport" if socket.transport is Transport.UDP else b""
    name = hostport(Address(socket.transport, *named))
    return Fragments(
        b"Via: SIP/2.0/%s %s;branch=" % (transport.upper(), name),
        rport + b";" + FLOW_PARAM + b"=",
        b"<sip:%s;transport=%s;lr" % (name, transport),
    )


class Changes(NamedTuple):
    """What a forwarded request changes; the writer decides nothing.

    `via`: our complete Via line. `received`: (name, value) parameters for the sender's Via.
    `max_forwards`: the new value, or -1 to leave it. `route_lines`: Record-Route or Path lines
    (complete) at their place. `popped`: Route values naming us to remove from the top. `strip`:
    lines to drop: header indices for `write_indexed`, positions in the scanned lines for
    `write_plain`. `attach`: complete lines appended to the header section.
    `via_last`: the Record-Route lines were decided before our Via (a request from the
    upstream), so they come first where both are inserted at one place."""

    via: bytes
    received: list[tuple[bytes, bytes | None]]
    max_forwards: int
    route_name: bytes
    route_lines: list[bytes]
    popped: int
    strip: frozenset[int]
    attach: list[bytes]
    via_last: bool = False  # our Via after our Record-Route lines when both go at one place


# --------------------------------------------------------------------------- the common case


def write_plain(msg: Request, changes: Changes, found: Sequence[Line] = ()) -> bytes:
    """The outgoing bytes of a request read on the fast path: the positions come from the
    parser's match and `found`, the lines `Config.needs_index` finds (`edited_lines`), of which
    those at the positions `changes.strip` are dropped; no header index is built. On that path
    the top Via and Max-Forwards lines are spelled `Via` and `Max-Forwards` and end where their
    value (or comma list) ends; an edited line is written `Name: value`, as the indexed writer
    does."""
    raw = msg.raw
    strip = changes.strip
    m = msg.fast_match  # the parser's match: the spans of the top Via and Max-Forwards
    via_start, via_end = m.span("via") if m is not None else (-1, -1)
    line_start = via_start - 5
    if raw[line_start:via_start] != b"Via: ":
        line_start = raw.rfind(b"\n", 0, via_start) + 1
    live = [line for j, line in enumerate(found) if j not in strip] if strip else found
    # cuts: (position, end of what it replaces, text); inserts have end == position and come
    # first among the cuts at one position (the sort below is stable)
    cuts = _inserts(msg, changes, live, line_start)
    if changes.received:
        line_end = raw.find(CRLF, via_end)
        top = raw[via_start:via_end]  # the match's top Via value: the line's first element
        if top.find(b'"') < 0:
            value = _with_plain_params(top, changes.received) + raw[via_end:line_end]
        else:  # a quoted parameter value may hold a ';'
            value = _with_params(raw[via_start:line_end], changes.received)
        cuts.append((line_start, line_end, b"Via: " + value))
    mf_start, mf_end = m.span("mf") if m is not None else (-1, -1)
    if changes.max_forwards >= 0 and mf_start >= 0:
        mf_line = mf_start - 14
        if raw[mf_line:mf_start] != b"Max-Forwards: ":
            mf_line = raw.rfind(b"\n", 0, mf_start) + 1
        cuts.append((mf_line, mf_end, b"Max-Forwards: %d" % changes.max_forwards))
    for j in strip:
        line = found[j]
        cuts.append((line.start, line.end + 2, b""))
    if changes.popped:
        cuts += _popped_routes(live, changes.popped)
    tail = b""
    if changes.max_forwards >= 0 and mf_start < 0:
        tail = b"Max-Forwards: %d\r\n" % changes.max_forwards
    if changes.attach:
        tail += CRLF.join(changes.attach) + CRLF
    if tail:
        hend = msg.header_end
        cuts.append((hend, hend, tail))
    cuts.sort(key=_position)
    return _splice(raw, cuts)


def _inserts(
    msg: Request, changes: Changes, live: Sequence[Line], via_at: int
) -> list[tuple[int, int, bytes]]:
    """Our Via before the top Via line, and our Record-Route or Path lines before the first
    line of that name, else right after the start line; in the order they were decided."""
    via = (via_at, via_at, changes.via + CRLF)
    if not changes.route_lines:
        return [via]
    place = msg.start_line_end
    key = changes.route_name.lower()
    for line in live:
        if line.key == key:
            place = line.start
            break
    routes = (place, place, CRLF.join(changes.route_lines) + CRLF)
    return [routes, via] if changes.via_last else [via, routes]


def _popped_routes(live: Sequence[Line], popped: int) -> list[tuple[int, int, bytes]]:
    """The cuts removing the first `popped` Route values (RFC 3261 §16.4): a line whose values
    all go is dropped (an empty one counts as one value, as the indexed writer pops), the
    first line keeping some is written from its next value on. A line without a comma holds one
    value, as `routes.found_routes` reads it: only a comma list is split."""
    cuts: list[tuple[int, int, bytes]] = []
    for line in live:
        if line.key != b"route":
            continue
        value = line.value
        spans = list_spans(value) if value.find(b",") >= 0 else None
        count = len(spans) if spans else 1
        if spans is not None and count > popped:
            value = value[spans[popped][0] :]
            cuts.append((line.start, line.end, line.name + b": " + value))
            break
        cuts.append((line.start, line.end + 2, b""))
        popped -= count
        if not popped:
            break
    return cuts


_position = itemgetter(0)


def _splice(raw: bytes, cuts: list[tuple[int, int, bytes]]) -> bytes:
    pieces: list[bytes] = []
    cursor = 0
    for at, end, text in cuts:
        pieces += (raw[cursor:at], text)
        cursor = end
    pieces += (raw[cursor:],)
    return b"".join(pieces)


def _with_plain_params(element: bytes, params: list[tuple[bytes, bytes | None]]) -> bytes:
    """`_with_params` for a top Via value read on the fast path with no quoted parameter value:
    there every parameter is `;name[=value]` with no LWS and no `;` inside, so the value splits
    on `;` into its head and its parameters."""
    parts = element.split(b";")
    names = [part.partition(b"=")[0].lower() for part in parts]  # [0]: the head, never a name
    appended = b""
    for name, value in params:
        text = name if value is None else name + b"=" + value
        if name in names:
            parts[names.index(name)] = text
        else:
            appended += b";" + text
    return b";".join(parts) + appended


def _with_params(value: bytes, params: list[tuple[bytes, bytes | None]]) -> bytes:
    """The first element of a Via value with `params` set: an existing parameter of the same
    name is replaced in place, the others appended after the last parameter (RFC 3261 §18.2.1,
    RFC 3581 §4)."""
    spans = list_spans(value)
    s0, e0 = spans[0]
    element = value[s0:e0]
    head_end, pspans = via_param_spans(element)
    params_end = pspans[-1][2] if pspans else head_end
    replaced: list[tuple[int, int, bytes]] = []
    appended = b""
    for name, pvalue in params:
        text = b";" + name + (b"" if pvalue is None else b"=" + pvalue)
        hit = [(s, e) for n, s, e in pspans if n == name]
        if hit:
            replaced.append((hit[0][0], hit[0][1], text))
        else:
            appended += text
    replaced.append((params_end, params_end, appended))
    replaced.sort(key=_position)
    return value[:s0] + _splice(element, replaced) + value[e0:]


# --------------------------------------------------------------------------- any message


def write_indexed(msg: Request, changes: Changes) -> bytes:
    """The outgoing bytes of any request, the positions taken from its header index (read by
    position: `Message.header_keys`, `name_at`, `value_at`, `line_starts`; no `Header` tuple)."""
    count = msg.header_count
    route_key = changes.route_name.lower()  # Record-Route, Path: no compact form
    # the lines of the names edited here, by header index, found in one pass over the keys
    index: dict[bytes, list[int]] = {b"via": [], b"route": [], b"max-forwards": [], route_key: []}
    for i, key in enumerate(msg.header_keys):
        if key in index:
            index[key].append(i)
    strip = changes.strip
    # per header index: lines to insert before it, and its new complete line (None: keep;
    # b"": drop)
    insert: dict[int, list[bytes]] = {}
    line: dict[int, bytes] = dict.fromkeys(strip, b"")
    vias = index[b"via"]
    insert.setdefault(vias[0] if vias else count, []).append(changes.via)
    if changes.received:
        first = vias[0]
        value = _with_params(msg.value_at(first), changes.received)
        line[first] = msg.name_at(first) + b": " + value
    _pop_routes(msg, index[b"route"], changes.popped, line)
    if changes.max_forwards >= 0:
        found = [i for i in index[b"max-forwards"] if line.get(i) != b""]
        if found:
            line[found[0]] = msg.name_at(found[0]) + b": %d" % changes.max_forwards
        else:
            insert.setdefault(count, []).append(b"Max-Forwards: %d" % changes.max_forwards)
    if changes.route_lines:
        found = [i for i in index[route_key] if line.get(i) != b""]
        insert.setdefault(found[0] if found else 0, []).extend(changes.route_lines)
    _unfold(msg, line)
    if changes.attach:
        insert.setdefault(count, []).extend(changes.attach)
    return _write(msg, insert, line)


def _pop_routes(msg: Request, routes: list[int], popped: int, line: dict[int, bytes]) -> None:
    """Remove the first `popped` Route values (RFC 3261 §16.4), one value at a time."""
    for _ in range(popped):
        live = [i for i in routes if line.get(i) != b""]
        if not live:
            return
        i = live[0]
        current = line.get(i)
        value = msg.value_at(i) if current is None else current.partition(b": ")[2]
        spans = list_spans(value)
        line[i] = b"" if len(spans) <= 1 else msg.name_at(i) + b": " + value[spans[1][0] :]


def _unfold(msg: Request, line: dict[int, bytes]) -> None:
    """Folded lines (RFC 3261 §7.3.1) are written unfolded, as we read them (SECURITY-CASES
    10); a folded value holding a NUL cannot be one line and is refused by the caller."""
    raw = msg.raw
    end = msg.header_end
    if raw.find(b"\r\n ", 0, end) < 0 and raw.find(b"\r\n\t", 0, end) < 0:
        return
    starts = msg.line_starts()
    for i in range(msg.header_count):
        if raw.find(CRLF, starts[i], starts[i + 1] - 2) >= 0:
            value = msg.value_at(i)
            if b"\x00" in value:
                raise ParseError("NUL in a folded header value")
            if i not in line:
                line[i] = msg.name_at(i) + b": " + value


def _write(msg: Request, insert: dict[int, list[bytes]], line: dict[int, bytes]) -> bytes:
    """One join over slices of `raw`: line `i` spans `starts[i]:starts[i + 1]`, and
    `starts[header_count]` is `header_end`, where the lines appended at the end go."""
    starts = msg.line_starts()
    count = msg.header_count
    raw = msg.raw
    pieces: list[bytes] = []
    cursor = 0
    for i in sorted(insert.keys() | line.keys()):
        at = starts[i]
        pieces.append(raw[cursor:at])
        cursor = at
        for text in insert.get(i, ()):
            pieces.append(text)
            pieces.append(CRLF)
        new = line.get(i)
        if new is not None and i < count:
            if new:
                pieces.append(new)
                pieces.append(CRLF)
            cursor = starts[i + 1]
    pieces.append(raw[cursor:])
    return b"".join(pieces)
