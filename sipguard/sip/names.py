"""Header names: the line grammar of a header block and the cache from a name as received to
its canonical key.

Owns: `COMPACT_FORMS` (compact form -> full name) and `canonical_key` (a name as received ->
lowercase full name), `HEADER_RE` (one header line without folding), `KEYS` / `key_of` (the same
as `canonical_key`, cached: one dict look-up on the hot path) and `index_keys` (canonical key ->
line positions). The parser and `Message` build the header index from these;
nothing else here. RFC 3261 §7.3.1, §7.3.3 (compact forms), §25.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["COMPACT_FORMS", "HEADER_RE", "KEYS", "canonical_key", "index_keys", "key_for", "key_of"]

# RFC 3261 §7.3.3 and the IANA registry: compact form -> full lowercase name.
COMPACT_FORMS: dict[bytes, bytes] = {
    b"i": b"call-id",
    b"m": b"contact",
    b"e": b"content-encoding",
    b"l": b"content-length",
    b"c": b"content-type",
    b"f": b"from",
    b"s": b"subject",
    b"k": b"supported",
    b"t": b"to",
    b"v": b"via",
    b"o": b"event",
    b"u": b"allow-events",
    b"r": b"refer-to",
    b"b": b"referred-by",
    b"a": b"accept-contact",
    b"j": b"reject-contact",
    b"d": b"request-disposition",
    b"x": b"session-expires",
    b"y": b"identity",
    b"n": b"identity-info",
}


def canonical_key(name: bytes) -> bytes:
    """Lowercase full header name for a name as received (compact forms expanded)."""
    low = name.lower()
    return COMPACT_FORMS.get(low, low)


# Every header line of a header block without folding: CRLF, a token name, optional SP/HTAB, a
# colon, the value (RFC 3261 §7.3.1, §25).
HEADER_RE = re.compile(rb"\r\n([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*([^\r\n]*)")


class _KeyCache(dict[bytes, bytes]):
    """Header name as received -> canonical key (`canonical_key`): `KEYS[name]` is one
    dict look-up, the lowercasing only on a miss (`__missing__`), which remembers the name
    unless the cache is full or the name long, so a flood of distinct names cannot grow it.
    Filled at import with the usual spellings of the usual headers, so such a flood cannot
    keep them out either."""

    __slots__ = ()

    def __missing__(self, name: bytes) -> bytes:
        key = canonical_key(name)
        if len(self) < _KEYS_MAX and len(name) <= 64:
            self[name] = key
        return key


_KEYS_MAX = 2048
KEYS = _KeyCache()
_USUAL_NAMES = (
    b"Via", b"From", b"To", b"Call-ID", b"CSeq", b"Contact", b"Max-Forwards", b"Content-Length",
    b"Content-Type", b"User-Agent", b"Server", b"Allow", b"Supported", b"Require",
    b"Proxy-Require", b"Unsupported", b"Route", b"Record-Route", b"Path", b"Service-Route",
    b"Authorization", b"Proxy-Authorization", b"WWW-Authenticate", b"Proxy-Authenticate",
    b"Expires", b"Min-Expires", b"Accept", b"Accept-Encoding", b"Accept-Language", b"Date",
    b"Subject", b"Event", b"Allow-Events", b"Session-Expires", b"Min-SE", b"Retry-After",
    b"P-Asserted-Identity", b"P-Preferred-Identity", b"Privacy", b"Reason", b"Warning",
    b"Call-Info", b"Organization", b"Timestamp", b"Content-Disposition", b"Content-Encoding",
    b"Refer-To", b"Referred-By", b"Replaces", b"RAck", b"RSeq", b"Diversion", b"Identity",
)  # fmt: skip
for _name in (*_USUAL_NAMES, *COMPACT_FORMS):
    for _spelling in (_name, _name.lower(), _name.upper()):
        KEYS[_spelling]  # fills the cache
key_of = KEYS.__getitem__


def key_for(name: bytes) -> bytes:
    """Canonical key of a header name as received, remembered for the next message."""
    return KEYS[name]


def index_keys(keys: Sequence[bytes]) -> dict[bytes, list[int]]:
    """Canonical header key -> the positions of its lines, in message order."""
    index: dict[bytes, list[int]] = {}
    for i, k in enumerate(keys):
        if k in index:
            index[k].append(i)
        else:
            index[k] = [i]
    return index
