"""The header section of a received message: one `Header` per line, and the index over them.

Owns: `Header` (one header line: name, key, value, span) and `HeaderIndex`, the part of a
message that reads its header lines generically: the index built once when a generic accessor
first needs it (the general parser builds it as it reads), the look-ups by key (`get`,
`get_all`, `line_values`, `indices`, `in`) and by position for the writers (`header_count`,
`name_at`, `value_at`, `key_at`, `line_span`, `line_starts`). Never parses a typed value
(`message` does, from these), never re-serialises, never does I/O.

RFC 3261 §7.3 (header fields, comma lists), §7.3.1 (folding), §7.3.3 (compact forms).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from itertools import accumulate, count
from operator import add
from typing import NamedTuple

from sipguard.sip.lists import LIST_HEADERS, split_list
from sipguard.sip.names import HEADER_RE, KEYS, index_keys, key_of

__all__ = ["Header", "HeaderIndex"]


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


class HeaderIndex:
    """The header lines of a message (the base of `Message`).

    `raw` is the message bytes; `start_line_end` the offset of the first header line;
    `header_end` the offset of the empty line that ends the header section
    (`raw[header_end:header_end + 2] == b"\\r\\n"`).

    The header index, built once when a generic accessor first needs it (the general parser
    builds it as it reads): per header line, in order, its name as received (`_names`), its
    value unfolded and stripped (`_values`), its canonical key (`_keys`), and key -> line
    positions (`_index`); the offsets where the lines start (`_starts`, one more entry:
    `header_end`) only when a writer asks for a span. Writers read lines by position
    (`header_count`, `name_at`, `value_at`, `key_at`, `line_span`); `headers` builds the
    `Header` tuples for the callers that want them all.
    """

    __slots__ = (
        "_headers",
        "_index",
        "_keys",
        "_names",
        "_starts",
        "_values",
        "header_end",
        "raw",
        "start_line_end",
    )

    raw: bytes
    header_end: int
    start_line_end: int
    _names: Sequence[bytes] | None
    _values: Sequence[bytes] | None
    _keys: Sequence[bytes] | None
    _index: dict[bytes, list[int]] | None
    _starts: list[int] | None
    _headers: tuple[Header, ...] | None

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
