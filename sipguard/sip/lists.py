"""Comma-separated header values (RFC 3261 §7.3.1): which headers are lists, and their split.

Owns: `LIST_HEADERS` (the headers whose value is a comma list), `split_list` (the elements of a
list, respecting quoted strings and <...>) and `list_spans` (where each element sits, for the
edit writers). Takes bytes, returns values or raises `ParseError`; never does I/O.
"""

from __future__ import annotations

import re
from operator import methodcaller

from sipguard.errors import ParseError

__all__ = ["LIST_HEADERS", "list_spans", "split_list"]

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1: "#" rules in §25). The
# digest headers are NOT lists: their commas separate auth-params of one value.
LIST_HEADERS: frozenset[bytes] = frozenset(
    {
        b"via",
        b"route",
        b"record-route",
        b"path",
        b"service-route",
        b"contact",
        b"allow",
        b"supported",
        b"require",
        b"proxy-require",
        b"unsupported",
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"allow-events",
        b"content-encoding",
        b"content-language",
        b"in-reply-to",
        b"alert-info",
        b"call-info",
        b"error-info",
        b"warning",
        b"p-asserted-identity",
        b"p-preferred-identity",
        b"accept-contact",
        b"reject-contact",
        b"request-disposition",
    }
)


# One list element: quoted strings and <...> may hold commas (RFC 3261 §7.3.1).
_LIST_ITEM_RE = re.compile(rb'(?:"(?:[^"\\]|\\.)*"|<[^>]*>|[^,"<])+', re.S)
# A whole list of such elements (each element is read one way only: no backtracking changes
# where one ends), and the characters that make a value more than one plain element.
_LIST_RE = re.compile(
    rb'(?:"(?:[^"\\]|\\.)*"|<[^>]*>|[^,"<])+(?:,(?:"(?:[^"\\]|\\.)*"|<[^>]*>|[^,"<])+)*', re.S
)
_list_special = re.compile(rb'[,"<]').search
_strip_lws = methodcaller("strip", b" \t")
_lstrip_lws = methodcaller("lstrip", b" \t")


def _split_spans(value: bytes) -> list[tuple[int, int]]:
    """Spans of the comma-separated elements of `value` (stripped of LWS). An empty element
    (`a,,b`, a trailing comma) is an error; an empty value has no element."""
    if not value:
        return []
    if _list_special(value) is None:  # one element, no quote or <>: the common case
        stripped = value.strip(b" \t")
        if not stripped:
            raise ParseError("empty element in a comma-separated list")
        lead = value.find(stripped)  # after the leading LWS
        return [(lead, lead + len(stripped))]
    if _LIST_RE.fullmatch(value) is not None:  # well formed: every element in one findall
        items = _LIST_ITEM_RE.findall(value)
        kept = list(map(len, map(_strip_lws, items)))
        if 0 not in kept:
            spans: list[tuple[int, int]] = []
            pos = 0
            for size, rest, length in zip(
                map(len, items), map(len, map(_lstrip_lws, items)), kept, strict=True
            ):
                lead = pos + size - rest  # after the element's leading LWS
                spans += ((lead, lead + length),)
                pos += size + 1  # the element and its comma
            return spans
    spans = []  # what is wrong with the list, or a plain list with an empty element
    if value.find(b'"') < 0 and value.find(b"<") < 0:
        pos = 0
        for part in value.split(b","):
            stripped = part.strip(b" \t")
            if not stripped:
                raise ParseError("empty element in a comma-separated list")
            lead = pos + len(part) - len(part.lstrip(b" \t"))
            spans.append((lead, lead + len(stripped)))
            pos += len(part) + 1
        return spans
    pos = 0
    end = len(value)
    while True:
        m = _LIST_ITEM_RE.match(value, pos)
        if m is None:
            raise ParseError("empty element in a comma-separated list")
        s, e = m.span()
        part = value[s:e]
        stripped = part.strip(b" \t")
        if not stripped:
            raise ParseError("empty element in a comma-separated list")
        lead = s + len(part) - len(part.lstrip(b" \t"))
        spans.append((lead, lead + len(stripped)))
        if e >= end:
            return spans
        if value[e : e + 1] != b",":
            raise ParseError("unbalanced quote or angle bracket in a list")
        pos = e + 1
        if pos >= end:
            raise ParseError("empty element in a comma-separated list")


def split_list(value: bytes) -> list[bytes]:
    """Split a comma list, respecting quoted strings and <...> (RFC 3261 §7.3.1). A well
    formed list is checked by one match and split by one `findall` (`_split_spans` says what
    is wrong with another)."""
    if value.find(b",") < 0:
        stripped = value.strip(b" \t")
        return [stripped] if stripped else []
    if _LIST_RE.fullmatch(value) is not None:
        items = [item.strip(b" \t") for item in _LIST_ITEM_RE.findall(value)]
        if b"" not in items:
            return items
    return [value[s:e] for s, e in _split_spans(value)]


def list_spans(value: bytes) -> list[tuple[int, int]]:
    """Spans (start, end) of the elements of a comma list inside `value`."""
    return _split_spans(value)
