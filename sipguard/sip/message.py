"""SIP message objects: the received bytes plus typed accessors parsed on demand.

Owns: `Message`, `Request`, `Response`, `Header` and `RecoveredHeaders`. A message keeps the
exact bytes it was parsed from (`raw`, trimmed to Content-Length) and an index of its header
lines; typed values (Via, From, To, CSeq, URIs...) are parsed the first time they are read and
cached. Objects are effectively immutable: edits produce new bytes (see `edit.py`). Never
re-serialises a message, never does I/O. Accessors raise only `ParseError`.

RFC 3261 §7 (message structure), §7.3 (header fields, comma lists), §20 (header semantics),
§8.1.1 (mandatory headers), §16.3 (Max-Forwards default 70).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sipguard.errors import ParseError
from sipguard.sip.fields import (
    LIST_HEADERS,
    CSeq,
    NameAddr,
    SipUri,
    Via,
    canonical_key,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_uri,
    parse_via_values,
    split_list,
)

__all__ = ["Header", "Message", "RecoveredHeaders", "Request", "Response"]

DEFAULT_MAX_FORWARDS = 70


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
    `headers` the header lines in order; `header_end` the offset of the empty line that ends
    the header section (`raw[header_end:header_end + 2] == b"\\r\\n"`)."""

    __slots__ = (
        "_contacts",
        "_cseq",
        "_from",
        "_index",
        "_to",
        "_vias",
        "body",
        "header_end",
        "headers",
        "limits_uri",
        "raw",
        "start_line_end",
    )

    raw: bytes
    body: bytes
    headers: tuple[Header, ...]
    header_end: int
    start_line_end: int
    limits_uri: int
    _index: dict[bytes, list[int]]
    _vias: list[Via] | None
    _from: NameAddr | None
    _to: NameAddr | None
    _cseq: CSeq | None
    _contacts: list[NameAddr] | None

    def __init__(
        self,
        raw: bytes,
        body: bytes,
        headers: tuple[Header, ...],
        index: dict[bytes, list[int]],
        start_line_end: int,
        header_end: int,
        max_uri_bytes: int,
    ) -> None:
        self.raw = raw
        self.body = body
        self.headers = headers
        self._index = index
        self.start_line_end = start_line_end
        self.header_end = header_end
        self.limits_uri = max_uri_bytes
        self._vias = None
        self._from = None
        self._to = None
        self._cseq = None
        self._contacts = None

    # --- raw header access ---

    def indices(self, key: bytes) -> list[int]:
        """Indices in `headers` of the lines whose key is `key` (lowercase full name or a
        compact form), in order."""
        return self._index.get(canonical_key(key), [])

    def get(self, key: bytes) -> bytes | None:
        """Value of the first header `key` (lowercase full name), or None."""
        idx = self._index.get(key)
        if idx is None:
            return None
        return self.headers[idx[0]].value

    def get_all(self, key: bytes) -> list[bytes]:
        """Every value of header `key`; comma lists are split for list headers (Via, Route,
        Record-Route, Contact, Allow, Supported...), respecting quoted strings and <>."""
        idx = self._index.get(key)
        if idx is None:
            return []
        headers = self.headers
        if key in LIST_HEADERS:
            out: list[bytes] = []
            for i in idx:
                out.extend(split_list(headers[i].value))
            return out
        return [headers[i].value for i in idx]

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    # --- typed accessors (parsed once, cached) ---

    @property
    def vias(self) -> list[Via]:
        vias = self._vias
        if vias is None:
            idx = self._index.get(b"via")
            if idx is None:
                raise ParseError("missing Via")
            vias = []
            for i in idx:
                vias.extend(parse_via_values(self.headers[i].value))
            self._vias = vias
        return vias

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def call_id(self) -> bytes:
        value = self.get(b"call-id")
        if value is None:
            raise ParseError("missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        cseq = self._cseq
        if cseq is None:
            value = self.get(b"cseq")
            if value is None:
                raise ParseError("missing CSeq")
            cseq = self._cseq = parse_cseq(value)
        return cseq

    @property
    def from_(self) -> NameAddr:
        addr = self._from
        if addr is None:
            value = self.get(b"from")
            if value is None:
                raise ParseError("missing From")
            addr = self._from = parse_name_addr(value, max_uri_bytes=self.limits_uri)
        return addr

    @property
    def to(self) -> NameAddr:
        addr = self._to
        if addr is None:
            value = self.get(b"to")
            if value is None:
                raise ParseError("missing To")
            addr = self._to = parse_name_addr(value, max_uri_bytes=self.limits_uri)
        return addr

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values in order; empty for `Contact: *` or when absent."""
        contacts = self._contacts
        if contacts is None:
            contacts = []
            for i in self._index.get(b"contact", ()):
                value = self.headers[i].value
                if value == b"*":
                    continue
                contacts.extend(parse_name_addr_list(value, max_uri_bytes=self.limits_uri))
            self._contacts = contacts
        return contacts

    @property
    def is_contact_wildcard(self) -> bool:
        """True for `Contact: *` (RFC 3261 §10.2.2, remove all bindings)."""
        idx = self._index.get(b"contact")
        return idx is not None and self.headers[idx[0]].value == b"*"

    @property
    def routes(self) -> list[NameAddr]:
        return self._addr_list(b"route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._addr_list(b"record-route")

    def _addr_list(self, key: bytes) -> list[NameAddr]:
        out: list[NameAddr] = []
        for i in self._index.get(key, ()):
            out.extend(parse_name_addr_list(self.headers[i].value, max_uri_bytes=self.limits_uri))
        return out

    @property
    def max_forwards(self) -> int:
        """RFC 3261 §16.6 step 3 / §8.1.1.6: 70 when absent. Validated at parse time."""
        value = self.get(b"max-forwards")
        if value is None:
            return DEFAULT_MAX_FORWARDS
        return _parse_max_forwards(value)

    @property
    def content_length(self) -> int:
        """Length of `body` (equals the Content-Length header when present)."""
        return len(self.body)

    @property
    def user_agent(self) -> bytes | None:
        return self.get(b"user-agent")

    @property
    def start_line(self) -> bytes:
        return self.raw[: self.start_line_end - 2]


def _parse_max_forwards(value: bytes) -> int:
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
    unknown method such as `RE%47IST%45R` is its own method); `uri` the raw Request-URI."""

    __slots__ = ("_ruri", "method", "uri")

    method: bytes
    uri: bytes
    _ruri: SipUri | None

    def __init__(
        self,
        method: bytes,
        uri: bytes,
        raw: bytes,
        body: bytes,
        headers: tuple[Header, ...],
        index: dict[bytes, list[int]],
        start_line_end: int,
        header_end: int,
        max_uri_bytes: int,
    ) -> None:
        Message.__init__(self, raw, body, headers, index, start_line_end, header_end, max_uri_bytes)
        self.method = method
        self.uri = uri
        self._ruri = None

    @property
    def request_uri(self) -> SipUri:
        ruri = self._ruri
        if ruri is None:
            ruri = self._ruri = parse_uri(self.uri, max_bytes=self.limits_uri)
        return ruri

    def __repr__(self) -> str:
        return f"<Request {self.method!r} {len(self.raw)} bytes>"


class Response(Message):
    """A SIP response: `status` 100..699 and the raw `reason` phrase (may be empty)."""

    __slots__ = ("reason", "status")

    status: int
    reason: bytes

    def __init__(
        self,
        status: int,
        reason: bytes,
        raw: bytes,
        body: bytes,
        headers: tuple[Header, ...],
        index: dict[bytes, list[int]],
        start_line_end: int,
        header_end: int,
        max_uri_bytes: int,
    ) -> None:
        Message.__init__(self, raw, body, headers, index, start_line_end, header_end, max_uri_bytes)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.raw)} bytes>"
