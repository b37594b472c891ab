"""SIP message objects: the received bytes plus typed accessors parsed on demand.

Owns: `Message`, `Request`, `Response`, `Header` and `RecoveredHeaders`. A message keeps the
exact bytes it was parsed from (`raw`, trimmed to Content-Length) and an index of its header
lines. The values that decide whether a message is acceptable at all (top Via, From, To,
Call-ID, CSeq) are plain attributes, set by the parser, which validated them: reading them costs
an attribute load, no call (every message the proxy handles reads them). Their parts (URI,
parameters) and every other typed value (Contact, Route, the whole Via list...) are parsed the
first time they are read and cached. Objects are effectively immutable: edits produce new bytes
(see `edit.py`). Never re-serialises a message, never does I/O. Accessors raise only
`ParseError`.

RFC 3261 §7 (message structure), §7.3 (header fields, comma lists), §20 (header semantics),
§8.1.1 (mandatory headers), §16.3 (Max-Forwards default 70).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from sipguard.errors import ParseError
from sipguard.sip.fields import (
    FAST_NEXT_VIA_RE,
    FAST_VIA_SEP_RE,
    FAST_VIA_VALUE_RE,
    LIST_HEADERS,
    CSeq,
    NameAddr,
    SipUri,
    Via,
    canonical_key,
    parse_name_addr_list,
    parse_uri,
    parse_via_values,
    split_list,
)

__all__ = ["Header", "Message", "RecoveredHeaders", "Request", "Response", "parse_max_forwards"]

DEFAULT_MAX_FORWARDS = 70

# Every header line of a header block without folding: CRLF, a token name, optional SP/HTAB, a
# colon, the value (RFC 3261 §7.3.1, §25).
# The first User-Agent line of a message read on the fast path (no folding there), found without
# building the header index; its value as the index would hold it (trailing LWS off).
_USER_AGENT_RE = re.compile(rb"\r\nUser-Agent[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r)", re.IGNORECASE)
_HEADER_RE = re.compile(rb"\r\n([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*([^\r\n]*)")
# Header name as received -> canonical key. Bounded so that a flood of distinct names cannot
# grow it (filled by the parser through `key_for`).
_KEYS: dict[bytes, bytes] = {}
_KEYS_MAX = 2048
_next_via = FAST_NEXT_VIA_RE.search
_via_sep = FAST_VIA_SEP_RE.match
_via_value = FAST_VIA_VALUE_RE.match


def key_for(name: bytes) -> bytes:
    """Canonical key of a header name as received, remembered for the next message."""
    key = canonical_key(name)
    if len(_KEYS) < _KEYS_MAX and len(name) <= 64:
        _KEYS[name] = key
    return key


def index_keys(keys: list[bytes]) -> dict[bytes, list[int]]:
    """Canonical header key -> the positions of its lines, in message order."""
    index: dict[bytes, list[int]] = {}
    for i, k in enumerate(keys):
        found = index.get(k)
        if found is None:
            index[k] = [i]
        else:
            found.append(i)
    return index


class Header(NamedTuple):
    """One header field. `name` as received; `key` lowercase full name (compact forms
    expanded); `value` unfolded (each fold becomes one SP) and stripped; `start`/`end` the
    byte span of the header line(s) in `Message.raw`, including the final CRLF.

    A NamedTuple rather than a dataclass: one is built per header line on the hot path, and a
    tuple costs a fraction of a frozen dataclass there."""

    name: bytes
    key: bytes
    value: bytes
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RecoveredHeaders:
    """What a failed parse could still read, to build a 400/505/513 reply (`ParseError.headers`).
    Values are raw header values with no CR, LF or NUL. `vias` holds every Via header value in
    order."""

    method: bytes
    vias: tuple[bytes, ...]
    from_: bytes
    to: bytes
    call_id: bytes
    cseq: bytes


class Message:
    """Common part of requests and responses.

    `raw` is the message bytes (start line to end of body, trimmed to Content-Length);
    `headers` the header lines in order (built on first use); `header_end` the offset of the
    empty line that ends the header section (`raw[header_end:header_end + 2] == b"\\r\\n"`);
    `start_line_end` the offset of the first header line.

    `top_via`, `from_`, `to`, `call_id` and `cseq` are set by `parse_message` (on its fast path
    built from the match, which validated them; on the general path from the values it
    validated). A message read on the fast path carries `_fast`, the match, and builds the
    header index (`_pairs`, `_keys`, `_index`) only when a generic accessor needs it.
    """

    __slots__ = (
        "_contacts",
        "_fast",
        "_headers",
        "_index",
        "_keys",
        "_pairs",
        "_vias",
        "body",
        "call_id",
        "cseq",
        "from_",
        "header_end",
        "limits_uri",
        "raw",
        "start_line_end",
        "to",
        "top_via",
    )

    raw: bytes
    body: bytes
    header_end: int
    start_line_end: int
    limits_uri: int
    _pairs: list[tuple[bytes, bytes]] | None
    _keys: list[bytes] | None
    _index: dict[bytes, list[int]] | None
    _headers: tuple[Header, ...] | None
    top_via: Via
    from_: NameAddr
    to: NameAddr
    call_id: bytes
    cseq: CSeq
    _fast: re.Match[bytes] | None
    _vias: list[Via] | None
    _contacts: list[NameAddr] | None

    def __init__(
        self,
        raw: bytes,
        body: bytes,
        start_line: bytes,
        pairs: list[tuple[bytes, bytes]],
        keys: list[bytes],
        index: dict[bytes, list[int]],
        header_end: int,
        max_uri_bytes: int,
    ) -> None:
        """Internal: built by `parse_message`. `pairs[i]` is (name as received, value) of
        header i, `keys[i]` its canonical key, `index` key -> header indices."""
        self.raw = raw
        self.body = body
        self.start_line_end = len(start_line) + 2
        self._pairs = pairs
        self._keys = keys
        self._index = index
        self.header_end = header_end
        self.limits_uri = max_uri_bytes
        self._headers = None
        self._fast = None
        self._vias = None
        self._contacts = None

    @property
    def start_line(self) -> bytes:
        return self.raw[: self.start_line_end - 2]

    # --- raw header access ---

    def _build_index(self) -> dict[bytes, list[int]]:
        """The header index of a message read on the fast path (no folding there: every
        line is `name: value`, names are tokens, single headers appear once)."""
        pairs: list[tuple[bytes, bytes]] = _HEADER_RE.findall(
            self.raw, self.start_line_end - 2, self.header_end
        )
        kget = _KEYS.get
        keys = [kget(n) or canonical_key(n) for n, _ in pairs]
        if any(v[-1:] in (b" ", b"\t") for _, v in pairs):
            pairs = [(n, v.rstrip(b" \t")) for n, v in pairs]  # trailing LWS is not the value
        index = index_keys(keys)
        self._pairs = pairs
        self._keys = keys
        self._index = index
        return index

    def _idx(self) -> dict[bytes, list[int]]:
        index = self._index
        return self._build_index() if index is None else index

    def _value(self, i: int) -> bytes:
        pairs = self._pairs
        if pairs is None:
            self._build_index()
            pairs = self._pairs
            assert pairs is not None
        return pairs[i][1]

    @property
    def headers(self) -> tuple[Header, ...]:
        """Every header line in order, with its byte span in `raw` (built on first use)."""
        headers = self._headers
        if headers is None:
            self._idx()
            out = []
            pos = self.start_line_end
            lines = self.raw[pos : self.header_end].split(b"\r\n")
            keys = self._keys
            pairs = self._pairs
            assert keys is not None and pairs is not None
            for i, (name, value) in enumerate(pairs):
                end = pos + len(lines[i]) + 2
                out.append(Header(name, keys[i], value, pos, end))
                pos = end
            headers = self._headers = tuple(out)
        return headers

    def indices(self, key: bytes) -> list[int]:
        """Indices in `headers` of the lines whose key is `key` (lowercase full name or a
        compact form, any case), in order."""
        return list(self._idx().get(canonical_key(key), ()))

    def get(self, key: bytes) -> bytes | None:
        """Value of the first header `key` (lowercase full name), or None."""
        idx = self._idx().get(key)
        if idx is None:
            return None
        return self._value(idx[0])

    def get_all(self, key: bytes) -> list[bytes]:
        """Every value of header `key`; comma lists are split for list headers (Via, Route,
        Record-Route, Contact, Allow, Supported...), respecting quoted strings and <>."""
        idx = self._idx().get(key)
        if idx is None:
            return []
        value = self._value
        if key in LIST_HEADERS:
            out: list[bytes] = []
            for i in idx:
                out.extend(split_list(value(i)))
            return out
        return [value(i) for i in idx]

    def __contains__(self, key: bytes) -> bool:
        return key in self._idx()

    # --- typed accessors (parsed once, cached) ---

    @property
    def vias(self) -> list[Via]:
        vias = self._vias
        if vias is None:
            idx = self._idx().get(b"via")
            if idx is None:
                raise ParseError("missing Via")
            if len(idx) == 1:
                vias = parse_via_values(self._value(idx[0]))
            else:
                vias = []
                for i in idx:
                    vias.extend(parse_via_values(self._value(i)))
            self._vias = vias
        return vias

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values in order; empty for `Contact: *` or when absent."""
        contacts = self._contacts
        if contacts is None:
            contacts = []
            for i in self._idx().get(b"contact", ()):
                value = self._value(i)
                if value == b"*":
                    continue
                contacts.extend(parse_name_addr_list(value, max_uri_bytes=self.limits_uri))
            self._contacts = contacts
        return contacts

    @property
    def is_contact_wildcard(self) -> bool:
        """True for `Contact: *` (RFC 3261 §10.2.2, remove all bindings)."""
        idx = self._idx().get(b"contact")
        return idx is not None and self._value(idx[0]) == b"*"

    @property
    def routes(self) -> list[NameAddr]:
        return self._addr_list(b"route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._addr_list(b"record-route")

    def _addr_list(self, key: bytes) -> list[NameAddr]:
        out: list[NameAddr] = []
        for i in self._idx().get(key, ()):
            out.extend(parse_name_addr_list(self._value(i), max_uri_bytes=self.limits_uri))
        return out

    def matched_span(self, group: str) -> tuple[int, int] | None:
        """Where the parser's fast match found `group` (a name in `fields.FAST_GROUPS`) in `raw`:
        (-1, -1) when the group matched nothing; None when the message was not read on the fast
        path. Lets an editor place its cuts without building the header index."""
        m = self._fast
        return None if m is None else m.span(group)

    @property
    def second_via(self) -> Via | None:
        """The Via value below the top one (None when there is none), as `vias[1]`.

        A response relayed through us carries ours on top and the sender's below; only those
        two matter (RFC 3261 §16.7 step 3, §18.2.2). On the fast path the match validated every
        Via, so the second value alone is read (from where the top one ends) and parsed; on the
        general path every Via was parsed already."""
        m = self._fast
        if m is None or self._vias is not None:
            vias = self.vias
            return vias[1] if len(vias) > 1 else None
        raw = self.raw
        end = m.end("via")
        if raw[end : end + 2] == b"\r\n":  # the top line holds one value: the next Via line
            line = _next_via(raw, end, self.header_end)
            if line is None:
                return None
            start = line.end()
        else:  # a comma list: the value after the separator
            start = _via_sep(raw, end).end()  # type: ignore[union-attr]  # validated
        return Via(_via_value(raw, start).group())  # type: ignore[union-attr]  # validated

    def top_via_cut(self) -> tuple[int, int] | None:
        """(start, end) such that `raw[:start] + raw[end:]` is this message without its top Via
        value (RFC 3261 §16.7 step 3), the bytes `Edits(msg).remove_top_via().build()` writes:
        the whole line, CRLF included, when it holds that value alone, else the value and the
        separator after it. From the parser's fast match, no header index; None when the
        message was not read on the fast path or the line is not spelled `Via: ` (the edit
        writer then rewrites the line)."""
        m = self._fast
        if m is None:
            return None
        raw = self.raw
        start, end = m.span("via")
        if raw[end : end + 2] == b"\r\n":
            line = start - 5
            if raw[line:start] != b"Via: ":
                line = raw.rfind(b"\n", 0, start) + 1
            return line, end + 2
        if raw[start - 5 : start] != b"Via: ":
            return None
        return start, _via_sep(raw, end).end()  # type: ignore[union-attr]  # validated

    @property
    def max_forwards(self) -> int:
        """RFC 3261 §16.6 step 3 / §8.1.1.6: 70 when absent. Validated at parse time."""
        m = self._fast
        if m is not None:  # the fast match read the one Max-Forwards there may be
            value = m.group("mf")
            return DEFAULT_MAX_FORWARDS if value is None else int(value)
        idx = self._idx().get(b"max-forwards")
        if idx is None:
            return DEFAULT_MAX_FORWARDS
        return parse_max_forwards(self._value(idx[0]))

    @property
    def content_length(self) -> int:
        """Length of `body` (equals the Content-Length header when present)."""
        return len(self.body)

    @property
    def user_agent(self) -> bytes | None:
        if self._fast is not None and self._index is None:
            m = _USER_AGENT_RE.search(self.raw, self.start_line_end - 2, self.header_end + 2)
            return None if m is None else m.group(1)
        return self.get(b"user-agent")


def parse_max_forwards(value: bytes) -> int:
    # RFC 3261 §20.22: 1*DIGIT, 0-255. Our choice (RFC 4475 scalar02 allows either): a value
    # out of 0..255 is a 400, never clamped. Digit count bounded before int().
    if not value.isdigit() or len(value) > 10 or not value.isascii():
        raise ParseError("malformed Max-Forwards")
    number = int(value)
    if number > 255:
        raise ParseError("Max-Forwards out of range")
    return number


class Request(Message):
    """A SIP request. `method` is case-sensitive and kept as received (RFC 3261 §7.1: an
    unknown method such as `RE%47IST%45R` is its own method); `uri` the raw Request-URI.
    Built only by `parse_message`, which sets `method`, `uri` and `_ruri` after `__init__`."""

    __slots__ = ("_ruri", "method", "uri")

    method: bytes
    uri: bytes
    _ruri: SipUri | None

    @property
    def request_uri(self) -> SipUri:
        ruri = self._ruri
        if ruri is None:
            ruri = self._ruri = parse_uri(self.uri, max_bytes=self.limits_uri)
        return ruri

    def __repr__(self) -> str:
        return f"<Request {self.method!r} {len(self.raw)} bytes>"


class Response(Message):
    """A SIP response: `status` 100..699 and the raw `reason` phrase (may be empty).
    Built only by `parse_message`, which sets `status` and `reason` after `__init__`."""

    __slots__ = ("reason", "status")

    status: int
    reason: bytes

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.raw)} bytes>"
