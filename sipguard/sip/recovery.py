"""Recovering the headers of a request that failed to parse, to answer it (RFC 3261 §8.2.6).

Owns: `recover_headers`, a lenient reading of the request method and the Via, From, To, Call-ID
and CSeq values of a message the strict parser refused (or a stream frame the framer refused),
so that the core can build a 400/505/513 reply that reaches the sender. Used only on the error
paths (`parser`, `framing`): never on a message that parses.

Never does: accept a message (what it reads is only good for the reply), decode to str, I/O.
It never returns a value holding CR, LF or NUL, so nothing it reads can inject a header line.
"""

from __future__ import annotations

import re

from sipguard.sip.abnf import TOKEN
from sipguard.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipguard.sip.message import RecoveredHeaders
from sipguard.sip.names import canonical_key

__all__ = ["recover_headers"]

_TOKEN_RE = re.compile(TOKEN)
# The fields a reply copies from its request (RFC 3261 §8.2.6.2), by canonical name.
_WANTED = frozenset((b"via", b"from", b"to", b"call-id", b"cseq"))


def recover_headers(
    data: bytes, limits: ParserLimits = DEFAULT_LIMITS, start: int = 0
) -> RecoveredHeaders | None:
    """Leniently read the request method and the Via, From, To, Call-ID and CSeq values of a
    request that failed to parse, so that a 400/505/513 reply can be built (RFC 3261 §8.2.6).
    None for a response, or when any of them is missing or holds CR, LF or NUL."""
    end = data.find(b"\r\n\r\n", start)
    block = data[start:] if end < 0 else data[start:end]
    lines = block.split(b"\r\n")
    method = lines[0].split(b" ", 1)[0]
    if method[:4].upper() == b"SIP/" or _TOKEN_RE.fullmatch(method) is None:
        return None
    found: dict[bytes, bytes] = {}
    vias: list[bytes] = []
    for group in _fields(lines[1 : limits.max_headers + 1]):
        field = _wanted(group, limits.max_line_bytes)
        if field is None:
            continue
        key, value = field
        if key == b"via":
            vias.append(value)
        elif key not in found:
            found[key] = value
    if not vias or len(found) != 4:
        return None
    return RecoveredHeaders(
        method, tuple(vias), found[b"from"], found[b"to"], found[b"call-id"], found[b"cseq"]
    )


def _fields(lines: list[bytes]) -> list[list[bytes]]:
    """Header lines grouped by field: a line that starts with SP or HTAB continues the field
    before it (RFC 3261 §7.3.1 folding)."""
    current: list[bytes] | None = None
    groups: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line)
        else:
            current = [line]
            groups.append(current)
    return groups


def _wanted(group: list[bytes], max_line_bytes: int) -> tuple[bytes, bytes] | None:
    """The canonical name and unfolded value of one field, when it is one `recover_headers`
    reads and its value can be echoed: not empty, at most `max_line_bytes`, no CR, LF or NUL."""
    first = group[0]
    colon = first.find(b":")
    if colon <= 0:
        return None
    name = first[:colon].rstrip(b" \t")
    if _TOKEN_RE.fullmatch(name) is None:
        return None
    key = canonical_key(name)
    if key not in _WANTED:
        return None
    parts = [first[colon + 1 :].strip(b" \t")]
    parts.extend(part.strip(b" \t") for part in group[1:])
    value = b" ".join(part for part in parts if part)
    if (
        not value
        or len(value) > max_line_bytes
        or value.find(b"\r") >= 0
        or value.find(b"\n") >= 0
        or value.find(b"\x00") >= 0
    ):
        return None
    return key, value
