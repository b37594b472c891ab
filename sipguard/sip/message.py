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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, count
from operator import add
from typing import NamedTuple

from sipguard.errors import ParseError
from sipguard.sip.fields import (
    FAST_NEXT_VIA_RE,
    FAST_VIA_LINES_RE,
    FAST_VIA_SEP_RE,
    FAST_VIA_VALUE_RE,
    LIST_HEADERS,
    CSeq,
    NameAddr,
    SipUri,
    Via,
    parse_name_addr_list,
    parse_uri,
    parse_via_values,
    split_list,
)
from sipguard.sip.names import HEADER_RE, KEYS, index_keys, key_of

__all__ = ["Header", "Message", "RecoveredHeaders", "Request", "Response", "parse_max_forwards"]

DEFAULT_MAX_FORWARDS = 70

# The first User-Agent line of a message read on the fast path (no folding there), found without
# building the header index; its value as the index would hold it (trailing LWS off).
_USER_AGENT_RE = re.compile(rb"\r\nUser-Agent[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r)", re.IGNORECASE)
# Where the parser's fast match left off: the Vias after the top one (fields.FAST_*).
_next_via = FAST_NEXT_VIA_RE.search
_via_lines = FAST_VIA_LINES_RE.findall
_via_sep = FAST_VIA_SEP_RE.match
_via_value = FAST_VIA_VALUE_RE.match


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


_new_header = partial(tuple.__new__, Header)  # a Header from one row, at C level


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
    `header_end` the offset of the empty line that ends the header section
    (`raw[header_end:header_end + 2] == b"\\r\\n"`); `start_line_end` the offset of the first
    header line.

    The header index, built once when a generic accessor first needs it (the general parser
    builds it as it reads): per header line, in order, its name as received (`_names`), its
    value unfolded and stripped (`_values`), its canonical key (`_keys`), and key -> line
    positions (`_index`); the offsets where the lines start (`_starts`, one more entry:
    `header_end`) only when a writer asks for a span. Writers read lines by position
    (`header_count`, `name_at`, `value_at`, `key_at`, `line_span`); `headers` builds the
    `Header` tuples for the callers that want them all.

    `top_via`, `from_`, `to`, `call_id` and `cseq` are set by `parse_message` (on its fast path
    built from the match, which validated them; on the general path from the values it
    validated). A message read on the fast path carries `_fast`, the match.
    """

    __slots__ = (
        "_contacts",
        "_fast",
        "_headers",
        "_index",
        "_keys",
        "_names",
        "_starts",
        "_values",
        "_vias",
        "body",
        "call_id",
        "cseq",
        "from_",
        "header_end",
        "limits_uri",
        "max_forwards",
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
    # RFC 3261 §16.6 step 3 / §8.1.1.6: 70 when absent; read and validated by the parser
    max_forwards: int
    _names: Sequence[bytes] | None
    _values: Sequence[bytes] | None
    _keys: Sequence[bytes] | None
    _index: dict[bytes, list[int]] | None
    _starts: list[int] | None
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
        names: Sequence[bytes],
        values: Sequence[bytes],
        keys: Sequence[bytes],
        index: dict[bytes, list[int]],
        header_end: int,
        max_uri_bytes: int,
    ) -> None:
        """Internal: built by `parse_message` (general path) with the header index."""
        self.raw = raw
        self.body = body
        self.start_line_end = len(start_line) + 2
        self._names = names
        self._values = values
        self._keys = keys
        self._index = index
        self._starts = None
        self.header_end = header_end
        self.limits_uri = max_uri_bytes
        self._headers = None
        self._fast = None
        self._vias = None
        self._contacts = None

    @property
    def start_line(self) -> bytes:
        return self.raw[: self.start_line_end - 2]

    # --- the header index ---

    def _build_index(self) -> dict[bytes, list[int]]:
        """The header index of a message read on the fast path (no folding there: every
        line is `name: value`, names are tokens, single headers appear once): one `findall`,
        the keys by one cache look-up per name (`names.KEYS`), no object per line."""
        raw, start, end = self.raw, self.start_line_end - 2, self.header_end
        names, values = zip(*HEADER_RE.findall(raw, start, end), strict=True)
        if raw.find(b" \r\n", start, end) >= 0 or raw.find(b"\t\r\n", start, end) >= 0:
            values = tuple([v.rstrip(b" \t") for v in values])  # trailing LWS is not the value
        keys = self._keys = tuple(map(key_of, names))
        self._names = names
        self._values = values
        index = self._index = index_keys(keys)
        return index

    def _line_starts(self) -> list[int]:
        """Where each header line starts in `raw`, then `header_end` (line i ends where line
        i + 1 starts). Without folding (a folded block has them set by the parser): the running
        sum of the line lengths plus their CRLFs."""
        starts = self._starts
        if starts is None:
            pos = self.start_line_end
            lengths = map(len, self.raw[pos : self.header_end - 2].split(b"\r\n"))
            starts = self._starts = list(map(add, accumulate(lengths, initial=pos), count(0, 2)))
        return starts

    @property
    def header_count(self) -> int:
        """The number of header lines (a folded header is one)."""
        if self._index is None:
            self._build_index()
        return len(self._keys)  # type: ignore[arg-type]

    def name_at(self, i: int) -> bytes:
        """The name of header line `i` as received."""
        if self._index is None:
            self._build_index()
        return self._names[i]  # type: ignore[index]

    def value_at(self, i: int) -> bytes:
        """The value of header line `i`, unfolded, without surrounding LWS."""
        if self._index is None:
            self._build_index()
        return self._values[i]  # type: ignore[index]

    def key_at(self, i: int) -> bytes:
        """The canonical key of header line `i` (lowercase full name)."""
        if self._index is None:
            self._build_index()
        return self._keys[i]  # type: ignore[index]

    @property
    def header_keys(self) -> Sequence[bytes]:
        """The canonical key of every header line, in order."""
        if self._index is None:
            self._build_index()
        return self._keys  # type: ignore[return-value]

    def line_starts(self) -> Sequence[int]:
        """Where each header line starts in `raw`, then `header_end`: line `i` spans
        `starts[i]:starts[i + 1]`, its CRLF (and folds) included."""
        starts = self._starts
        return self._line_starts() if starts is None else starts

    def line_span(self, i: int) -> tuple[int, int]:
        """The byte span of header line `i` in `raw`, its CRLF (and folds) included."""
        starts = self._starts
        if starts is None:
            starts = self._line_starts()
        return starts[i], starts[i + 1]

    @property
    def headers(self) -> tuple[Header, ...]:
        """Every header line in order, with its byte span in `raw` (built on first use, all
        tuples in one pass at C level)."""
        headers = self._headers
        if headers is None:
            if self._index is None:
                self._build_index()
            starts = self._line_starts()
            names, keys, values = self._names, self._keys, self._values
            assert names is not None and keys is not None and values is not None
            rows = zip(names, keys, values, starts[:-1], starts[1:], strict=True)
            headers = self._headers = tuple(map(_new_header, rows))
        return headers

    def indices(self, key: bytes) -> list[int]:
        """Indices in `headers` of the lines whose key is `key` (lowercase full name or a
        compact form, any case), in order."""
        index = self._index
        if index is None:
            index = self._build_index()
        key = KEYS[key]
        return [*index[key]] if key in index else []

    def get(self, key: bytes) -> bytes | None:
        """Value of the first header `key` (lowercase full name), or None."""
        index = self._index
        if index is None:
            index = self._build_index()
        if key in index:
            return self._values[index[key][0]]  # type: ignore[index]
        return None

    def get_all(self, key: bytes) -> list[bytes]:
        """Every value of header `key`; comma lists are split for list headers (Via, Route,
        Record-Route, Contact, Allow, Supported...), respecting quoted strings and <>."""
        index = self._index
        if index is None:
            index = self._build_index()
        if key not in index:
            return []
        values = self._values
        assert values is not None
        if key in LIST_HEADERS:
            out: list[bytes] = []
            for i in index[key]:
                out += split_list(values[i])
            return out
        return [values[i] for i in index[key]]

    def line_values(self, key: bytes) -> list[bytes]:
        """The value of every line of header `key` (lowercase full name), in order, comma
        lists not split (`get_all` splits them)."""
        index = self._index
        if index is None:
            index = self._build_index()
        if key not in index:
            return []
        values = self._values
        assert values is not None
        return [values[i] for i in index[key]]

    def __contains__(self, key: bytes) -> bool:
        index = self._index
        if index is None:
            index = self._build_index()
        return key in index

    # --- typed accessors (parsed once, cached) ---

    @property
    def vias(self) -> list[Via]:
        """Every Via value in order (RFC 3261 §20.42). On the fast path the top one is
        `top_via`, already built, and the others are found from where it ends, without the
        header index."""
        vias = self._vias
        if vias is None and self._fast is not None:
            vias = self._vias = self._vias_after_top(self._fast)
        if vias is None:
            lines = self.line_values(b"via")
            if not lines:
                raise ParseError("missing Via")
            if len(lines) == 1:
                vias = parse_via_values(lines[0])
            else:
                vias = []
                for value in lines:
                    vias += parse_via_values(value)
            self._vias = vias
        return vias

    def _vias_after_top(self, m: re.Match[bytes]) -> list[Via]:
        raw = self.raw
        end = m.end("via")
        line_end = raw.find(b"\r\n", end)
        vias = [self.top_via]
        if line_end != end:  # a comma list on the top line
            vias += parse_via_values(raw[_via_sep(raw, end).end() : line_end])  # type: ignore[union-attr]
        for value in _via_lines(raw, line_end, self.header_end):
            vias += parse_via_values(value)
        return vias

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values in order; empty for `Contact: *` or when absent."""
        contacts = self._contacts
        if contacts is None:
            contacts = []
            for value in self.line_values(b"contact"):
                if value == b"*":
                    continue
                contacts.extend(parse_name_addr_list(value, max_uri_bytes=self.limits_uri))
            self._contacts = contacts
        return contacts

    @property
    def is_contact_wildcard(self) -> bool:
        """True for `Contact: *` (RFC 3261 §10.2.2, remove all bindings)."""
        return self.get(b"contact") == b"*"

    @property
    def routes(self) -> list[NameAddr]:
        return self._addr_list(b"route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._addr_list(b"record-route")

    def _addr_list(self, key: bytes) -> list[NameAddr]:
        out: list[NameAddr] = []
        for value in self.line_values(key):
            out += parse_name_addr_list(value, max_uri_bytes=self.limits_uri)
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
