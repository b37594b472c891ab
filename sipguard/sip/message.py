"""SIP message objects: the received bytes plus typed accessors parsed on demand.

Owns: `Message`, `Request`, `Response` and `RecoveredHeaders`. A message keeps the exact bytes
it was parsed from (`raw`, trimmed to Content-Length) and an index of its header lines (read
through its base, `headers.HeaderIndex`). The values that decide whether a message is
acceptable at all (top Via, From, To, Call-ID, CSeq) are plain attributes, set by the parser,
which validated them: reading them costs an attribute load, no call (every message the proxy
handles reads them). Their parts (URI, parameters) and every other typed value (Contact,
Route, the whole Via list...) are parsed the first time they are read and cached. Objects are
effectively immutable: edits produce new bytes (see `edit.py`). Never re-serialises a message,
never does I/O. Accessors raise only `ParseError`.

RFC 3261 §7 (message structure), §7.3 (header fields, comma lists), §20 (header semantics),
§8.1.1 (mandatory headers), §16.3 (Max-Forwards default 70).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sipguard.errors import ParseError
from sipguard.sip.fast import (
    FAST_NEXT_VIA_RE,
    FAST_VIA_LINES_RE,
    FAST_VIA_SEP_RE,
    FAST_VIA_VALUE_RE,
)
from sipguard.sip.headers import HeaderIndex
from sipguard.sip.uri import SipUri, parse_uri
from sipguard.sip.values import CSeq, NameAddr, Via, parse_name_addr_list, parse_via_values

__all__ = ["Message", "RecoveredHeaders", "Request", "Response", "parse_max_forwards"]

DEFAULT_MAX_FORWARDS = 70

# The first User-Agent line of a message read on the fast path (no folding there), found without
# building the header index; its value as the index would hold it (trailing LWS off).
_USER_AGENT_RE = re.compile(rb"\r\nUser-Agent[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r)", re.IGNORECASE)
# Where the parser's fast match left off: the Vias after the top one (fast.FAST_*).
_next_via = FAST_NEXT_VIA_RE.search
_via_lines = FAST_VIA_LINES_RE.findall
_via_sep = FAST_VIA_SEP_RE.match
_via_value = FAST_VIA_VALUE_RE.match


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


class Message(HeaderIndex):
    """Common part of requests and responses.

    `raw` is the message bytes (start line to end of body, trimmed to Content-Length); the
    header lines and their index are read through `HeaderIndex` (`headers.py`).

    `top_via`, `from_`, `to`, `call_id` and `cseq` are set by `parse_message` (on its fast path
    built from the match, which validated them; on the general path from the values it
    validated). A message read on the fast path carries `fast_match`, the match (None on the
    general path): its spans place an editor's cuts without a header index (`matched_span`).
    """

    __slots__ = (
        "_contacts",
        "_vias",
        "body",
        "call_id",
        "cseq",
        "fast_match",
        "from_",
        "limits_uri",
        "max_forwards",
        "to",
        "top_via",
    )

    body: bytes
    limits_uri: int
    # RFC 3261 §16.6 step 3 / §8.1.1.6: 70 when absent; read and validated by the parser
    max_forwards: int
    top_via: Via
    from_: NameAddr
    to: NameAddr
    call_id: bytes
    cseq: CSeq
    fast_match: re.Match[bytes] | None
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
        self.fast_match = None
        self._vias = None
        self._contacts = None

    @property
    def start_line(self) -> bytes:
        return self.raw[: self.start_line_end - 2]

    # --- the header index ---

    # --- typed accessors (parsed once, cached) ---

    @property
    def vias(self) -> list[Via]:
        """Every Via value in order (RFC 3261 §20.42). On the fast path the top one is
        `top_via`, already built, and the others are found from where it ends, without the
        header index."""
        vias = self._vias
        if vias is None and self.fast_match is not None:
            vias = self._vias = self._vias_after_top(self.fast_match)
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
        """Where the parser's fast match found `group` (a name in `fast.FAST_GROUPS`) in `raw`:
        (-1, -1) when the group matched nothing; None when the message was not read on the fast
        path. Lets an editor place its cuts without building the header index."""
        m = self.fast_match
        return None if m is None else m.span(group)

    @property
    def second_via(self) -> Via | None:
        """The Via value below the top one (None when there is none), as `vias[1]`.

        A response relayed through us carries ours on top and the sender's below; only those
        two matter (RFC 3261 §16.7 step 3, §18.2.2). On the fast path the match validated every
        Via, so the second value alone is read (from where the top one ends) and parsed; on the
        general path every Via was parsed already."""
        m = self.fast_match
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
        m = self.fast_match
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
        if self.fast_match is not None and self._index is None:
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
