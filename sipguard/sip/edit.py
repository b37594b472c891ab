"""Minimal byte edits of received messages, and building replies.

Owns: `apply_edits` (one pass over `Message.raw`: drop, replace and insert whole header lines,
copying every untouched byte as is), the `Edits` builder that combines the proxy's edits of one
message into that single pass, and `build_response` /
`build_error_response`. Never re-serialises a whole message, never changes the bytes of a header
it was not asked to touch, never touches the body (so Content-Length stays right). Lines given by
the caller must not hold CR, LF or NUL (ValueError: a bug in the caller, not a peer error).

Placement rules: `prepend_via` puts the new Via line right before the first Via line;
`insert_headers` puts each line right before the first existing header of the same name, or
right after the start line when there is none; `replace_max_forwards` appends the header at the
end of the header section when it is absent.

RFC 3261 §8.2.6 (building responses), §16.6 (proxy request edits: Max-Forwards, Record-Route,
Via, Route), §16.7 step 3 (removing the top Via of a response), §18.2.1 (received), RFC 3581
(rport), RFC 3327 (Path).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from sipguard.errors import ParseError
from sipguard.sip.fields import canonical_key, list_spans, via_param_spans
from sipguard.sip.message import Header, Message, RecoveredHeaders, Request

__all__ = [
    "Edits",
    "apply_edits",
    "build_error_response",
    "build_response",
    "without_top_via",
]

CRLF = b"\r\n"
_TAG_RE = re.compile(rb";[ \t]*[Tt][Aa][Gg][ \t]*=")
_PARAM_NAME_RE = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]+")
_PARAM_VALUE_RE = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")


def _check_line(line: bytes) -> bytes:
    if line.find(b"\r") >= 0 or line.find(b"\n") >= 0 or line.find(b"\x00") >= 0:
        raise ValueError("a header line must not contain CR, LF or NUL")
    return line


def apply_edits(
    msg: Message,
    *,
    drop: Collection[int] = (),
    replace: Mapping[int, bytes] | None = None,
    insert: Mapping[int, Sequence[bytes]] | None = None,
) -> bytes:
    """The one primitive all edits use: a new message from `msg.raw` in one pass.

    `drop`: indices (into `msg.headers`) of header lines to remove. `replace`: index -> new
    complete header line (`Name: value`, no CRLF); a dropped index ignores its replacement.
    `insert`: index -> lines to put before header `index` (`len(msg.headers)` = after the last
    header). Bytes outside the touched lines are copied unchanged, body included."""
    replace = replace or {}
    insert = insert or {}
    headers = msg.headers
    count = len(headers)
    for i in drop:
        if not 0 <= i < count:
            raise IndexError("header index out of range")
    for i in replace:
        if not 0 <= i < count:
            raise IndexError("header index out of range")
        _check_line(replace[i])
    for i, lines in insert.items():
        if not 0 <= i <= count:
            raise IndexError("header index out of range")
        for line in lines:
            _check_line(line)
    drop_set = drop if isinstance(drop, (set, frozenset)) else set(drop)
    touched = sorted(drop_set.union(replace, insert))
    raw = msg.raw
    pieces: list[bytes] = []
    cursor = 0
    for i in touched:
        at = headers[i].start if i < count else msg.header_end
        pieces.append(raw[cursor:at])
        cursor = at
        for line in insert.get(i, ()):
            pieces.append(line)
            pieces.append(CRLF)
        if i < count:
            if i in drop_set:
                cursor = headers[i].end
            elif i in replace:
                pieces.append(replace[i])
                pieces.append(CRLF)
                cursor = headers[i].end
    pieces.append(raw[cursor:])
    return b"".join(pieces)


class Edits:
    """Collects the edits of one message and applies them in a single pass (`build()`).

    Methods return `self`, so `Edits(req).set_top_via_params(...).prepend_via(...)
    .replace_max_forwards(n).build()` does all of a forwarded request's edits at once. Edits of
    one header compose: each sees the value left by the previous one; a dropped line stays
    dropped."""

    __slots__ = ("_drop", "_insert", "_msg", "_values")

    def __init__(self, msg: Message) -> None:
        self._msg = msg
        self._drop: set[int] = set()
        self._values: dict[int, bytes] = {}
        self._insert: dict[int, list[bytes]] = {}

    # --- primitives ---

    def drop(self, index: int) -> Edits:
        self._drop.add(index)
        return self

    def set_value(self, index: int, value: bytes) -> Edits:
        """Replace the value of header `index`, keeping its name as received."""
        self._values[index] = _check_line(value)
        return self

    def insert(self, index: int, line: bytes) -> Edits:
        """Insert `line` (`Name: value`) before header `index` (`len(headers)` = at the end)."""
        self._insert.setdefault(index, []).append(_check_line(line))
        return self

    def value(self, index: int) -> bytes:
        """The current value of header `index` (after the edits collected so far)."""
        value = self._values.get(index)
        return self._msg.headers[index].value if value is None else value

    def _first_live(self, key: bytes) -> int | None:
        for i in self._msg.indices(key):
            if i not in self._drop:
                return i
        return None

    def build(self) -> bytes:
        headers = self._msg.headers
        replace = {
            i: headers[i].name + b": " + v for i, v in self._values.items() if i not in self._drop
        }
        return apply_edits(self._msg, drop=self._drop, replace=replace, insert=self._insert)

    # --- proxy edits ---

    def prepend_via(self, value: bytes) -> Edits:
        """RFC 3261 §16.6 step 8: our Via goes on top, as its own line before the first Via."""
        first = self._first_live(b"via")
        return self.insert(len(self._msg.headers) if first is None else first, b"Via: " + value)

    def set_top_via_params(self, params: Sequence[tuple[bytes, bytes | None]]) -> Edits:
        """Add or replace parameters of the first Via value (RFC 3261 §18.2.1 received,
        RFC 3581 rport), in place; other values of a comma-separated Via line are untouched."""
        i = self._first_live(b"via")
        if i is None:
            raise ParseError("missing Via")
        value = self.value(i)
        spans = list_spans(value)
        if not spans:
            raise ParseError("empty Via")
        s0, e0 = spans[0]
        element = value[s0:e0]
        head_end, pspans = via_param_spans(element)
        params_end = pspans[-1][2] if pspans else head_end
        new_element = element
        appended: list[bytes] = []
        edits: list[tuple[int, int, bytes]] = []
        for name, pvalue in params:
            if _PARAM_NAME_RE.fullmatch(name) is None:
                raise ValueError("invalid Via parameter name")
            if pvalue is not None and _PARAM_VALUE_RE.fullmatch(pvalue) is None:
                raise ValueError("invalid Via parameter value")
            text = b";" + name + (b"" if pvalue is None else b"=" + pvalue)
            low = name.lower()
            hit = [(s, e) for n, s, e in pspans if n == low]
            if hit:
                edits.append((hit[0][0], hit[0][1], text))
            else:
                appended.append(text)
        for s, e, text in sorted(edits, reverse=True):
            new_element = new_element[:s] + text + new_element[e:]
        shift = len(new_element) - len(element)
        new_element = (
            new_element[: params_end + shift]
            + b"".join(appended)
            + new_element[params_end + shift :]
        )
        return self.set_value(i, value[:s0] + new_element + value[e0:])

    def _pop_first_value(self, key: bytes) -> Edits:
        i = self._first_live(key)
        if i is None:
            return self
        value = self.value(i)
        spans = list_spans(value)
        if len(spans) <= 1:
            return self.drop(i)
        return self.set_value(i, value[spans[1][0] :])

    def remove_top_via(self) -> Edits:
        """RFC 3261 §16.7 step 3: remove the first Via value only (a response leaving us)."""
        return self._pop_first_value(b"via")

    def remove_first_route(self) -> Edits:
        """RFC 3261 §16.4 loose routing: pop the first Route value."""
        return self._pop_first_value(b"route")

    def replace_max_forwards(self, n: int) -> Edits:
        """RFC 3261 §16.6 step 3: set Max-Forwards (added at the end when absent)."""
        if not 0 <= n <= 255:
            raise ValueError("Max-Forwards must be 0..255")
        found = self._first_live(b"max-forwards")
        if found is None:
            return self.insert(len(self._msg.headers), b"Max-Forwards: %d" % n)
        return self.set_value(found, b"%d" % n)

    def insert_headers(self, lines: Sequence[tuple[bytes, bytes]]) -> Edits:
        """Insert `Name: value` lines, each before the first header of the same name or right
        after the start line (Record-Route, Path: RFC 3261 §16.6 step 4, RFC 3327)."""
        for name, value in lines:
            found = self._first_live(name)
            self.insert(0 if found is None else found, name + b": " + value)
        return self

    def remove_headers(self, keys: Iterable[bytes]) -> Edits:
        """Drop every line of these headers, in every spelling (full, compact, any case)."""
        wanted = {canonical_key(k) for k in keys}
        for i, header in enumerate(self._msg.headers):
            if header.key in wanted:
                self._drop.add(i)
        return self

    def remove_header_lines(self, indices: Iterable[int]) -> Edits:
        count = len(self._msg.headers)
        for i in indices:
            if not 0 <= i < count:
                raise IndexError("header index out of range")
            self._drop.add(i)
        return self

    def remove_header_lines_if(self, predicate: Callable[[Header], bool]) -> Edits:
        for i, header in enumerate(self._msg.headers):
            if predicate(header):
                self._drop.add(i)
        return self


def without_top_via(msg: Message) -> bytes:
    """`msg` without its top Via value (RFC 3261 §16.7 step 3: a response leaving us), the
    bytes `Edits(msg).remove_top_via().build()` writes: one cut where the parser's fast match
    located the value (`Message.top_via_cut`), else the edit writer."""
    cut = msg.top_via_cut()
    if cut is None:
        return Edits(msg).remove_top_via().build()
    raw = msg.raw
    return raw[: cut[0]] + raw[cut[1] :]


def _status_line(status: int, reason: bytes) -> bytes:
    if not 100 <= status <= 699:
        raise ValueError("status must be 100..699")
    return b"SIP/2.0 %d %s" % (status, _check_line(reason))


def _finish(lines: list[bytes], extra_headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    for name, value in extra_headers:
        lines.append(_check_line(name + b": " + value))
    lines.append(b"Content-Length: 0")
    lines.append(b"")
    lines.append(b"")
    return CRLF.join(lines)


def build_response(
    request: Request,
    status: int,
    reason: bytes,
    *,
    to_tag: bytes | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
    vias: Sequence[bytes] | None = None,
) -> bytes:
    """A response to `request` (RFC 3261 §8.2.6.2): every Via line in order (or `vias`, e.g.
    with `received`/`rport` set), From, To (with `;tag=to_tag` added when the To has no tag),
    Call-ID, CSeq, `extra_headers`, Content-Length: 0."""
    lines = [_status_line(status, reason)]
    if vias is None:
        vias = [request.headers[i].value for i in request.indices(b"via")]
    lines.extend(b"Via: " + _check_line(v) for v in vias)
    lines.append(b"From: " + request.headers[request.indices(b"from")[0]].value)
    to = request.headers[request.indices(b"to")[0]].value
    if to_tag is not None and request.to.tag is None:
        to = to + b";tag=" + _check_line(to_tag)
    lines.append(b"To: " + to)
    lines.append(b"Call-ID: " + request.call_id)
    lines.append(b"CSeq: " + request.headers[request.indices(b"cseq")[0]].value)
    return _finish(lines, extra_headers)


def build_error_response(
    error: ParseError,
    *,
    status: int | None = None,
    reason: bytes | None = None,
    to_tag: bytes | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes | None:
    """A reply to a request that failed to parse, from the headers the parser recovered
    (`error.headers`); None when the error is not routable (responses, garbage). Status and
    reason default to the error's (400 Bad Request, 505, 513, 414)."""
    recovered = error.headers
    if not error.routable or not isinstance(recovered, RecoveredHeaders):
        return None
    code = error.status if status is None else status
    phrase = error.reason.encode("ascii") if reason is None else reason
    lines = [_status_line(code, phrase)]
    lines.extend(b"Via: " + v for v in recovered.vias)
    lines.append(b"From: " + recovered.from_)
    to = recovered.to
    if to_tag is not None and _TAG_RE.search(to) is None:
        to = to + b";tag=" + _check_line(to_tag)
    lines.append(b"To: " + to)
    lines.append(b"Call-ID: " + recovered.call_id)
    lines.append(b"CSeq: " + recovered.cseq)
    return _finish(lines, extra_headers)
