"""What sipguard writes about a request it admits, and what it strips from one it receives
(sans-IO).

Owns: `Stamper`, built once per (re)load from the settings, which precomputes per trunk the
attribute header lines and the constant tail of the canonical form, and returns the header
lines for one admitted request (`X-Sipguard-Trunk`, `-User`, `-Attr-*`; with an `identity`
section also `-Auth`, `-Source` and the signature `-Identity`); `InboundFilter`,
which names the header keys a request from outside must not carry (our prefix in any case,
`identity.strip_inbound`, and the identity headers the upstream would trust as asserted by us:
SECURITY-CASES 28, CVE-2020-28361).

Never does: read the clock (`now` is passed in), choose the trunk or the auth method, parse or
edit messages, log. The secret stays inside the `Stamper` (`repr` shows none).
"""

from __future__ import annotations

import hashlib
import re
from binascii import hexlify
from collections.abc import Iterable
from typing import Final, NamedTuple

from sipguard.identity.headers import (
    FORM_HEAD,
    SIGNATURE_FORMAT,
    AuthMethod,
    HeaderNames,
    attribute_header,
)
from sipguard.settings import DEFAULT_HEADER_PREFIX, IdentitySettings, Trunk
from sipguard.sip.names import COMPACT_FORMS

__all__ = ["ALWAYS_STRIPPED", "InboundFilter", "Stamper"]

# Stripped from requests from outside whatever the config says: the upstream trusts them as
# asserted by sipguard (RFC 3325 §9.1 P-Asserted-Identity; X-Authenticated-User of some PBXes).
ALWAYS_STRIPPED: Final = frozenset({b"p-asserted-identity", b"x-authenticated-user"})


class _Trunk(NamedTuple):
    """What a trunk adds to every request it admits, precomputed at load."""

    lines: tuple[bytes, ...]  # the trunk line, then its attribute lines, without CRLF
    # canonical lines from `<prefix>trunk:` to the last attribute: (ip, digest) admission
    tails: tuple[bytes, bytes]


# RFC 2104: the key, padded to SHA-256's 64-byte block, XORed with these (as translate tables).
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_BLOCK: Final = 64


class _Mac:
    """HMAC-SHA-256 (RFC 2104) with both padded-key blocks hashed once, at load: a message
    then costs two context copies and its own blocks. (OpenSSL 3's one-shot HMAC looks the
    digest up again on every call, which costs more than the hashing of a request's form.)
    `sipguard.identity.verify` uses `hmac.digest`; the tests check both agree."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def __repr__(self) -> str:
        return "_Mac(HMAC-SHA-256)"

    def hex(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return hexlify(outer.digest())


def _literal(text: bytes) -> bytes:
    """`text` as a constant part of a %-template."""
    return text.replace(b"%", b"%%")


# RFC 3261 §25.1 token characters: what may follow our prefix in a header name.
_TOKEN_CHARS: Final = rb"[A-Za-z0-9\-.!%*_+`'~]*"


class InboundFilter:
    """Which header keys (lowercase, compact forms expanded) are removed from a request from
    outside before anything reads it. `alternation` is the same set as a regex alternation of
    header names as they may be spelled on the wire (compact forms included), to be matched
    case-insensitively at a line start: the core uses it to tell a request with nothing to
    strip from one that needs its header index."""

    __slots__ = ("_keys", "_prefix", "alternation")

    def __init__(self, identity: IdentitySettings | None) -> None:
        prefix = identity.header_prefix if identity is not None else DEFAULT_HEADER_PREFIX
        self._prefix = prefix.lower().encode("ascii")
        extra = identity.strip_inbound if identity is not None else ()
        self._keys = ALWAYS_STRIPPED | {name.lower().encode("ascii") for name in extra}
        compact = {full: short for short, full in COMPACT_FORMS.items()}
        spellings = sorted(self._keys | {compact[k] for k in self._keys if k in compact})
        self.alternation = b"|".join(
            [re.escape(self._prefix) + _TOKEN_CHARS, *(re.escape(k) for k in spellings)]
        )

    def strips(self, key: bytes) -> bool:
        return key.startswith(self._prefix) or key in self._keys


class Stamper:
    """The header lines attached to an admitted request (DESIGN §4 step 4). Everything but
    the per-request values is built here, once per (re)load: per trunk its lines and the tail
    of its canonical form, and the %-templates of the form and the signature line."""

    __slots__ = (
        "_auth",
        "_forms",
        "_key_id",
        "_mac",
        "_names",
        "_signature",
        "_source",
        "_trunks",
        "_user",
    )

    def __init__(self, identity: IdentitySettings | None, trunks: Iterable[Trunk]) -> None:
        names = HeaderNames.of(
            identity.header_prefix if identity is not None else DEFAULT_HEADER_PREFIX
        )
        self._names = names
        self._user = names.user + b": "
        self._source = names.source + b": "
        self._auth = tuple(names.auth + b": " + m.value.encode() for m in _METHODS)
        self._mac: _Mac | None = None
        self._key_id = b""
        # The canonical form (sipguard.identity.headers) up to the trunk's tail, without and
        # with a user; the signature line.
        source = FORM_HEAD + _literal(names.source.lower()) + b":%s\n"
        self._forms = (source + b"%s", source + _literal(names.user.lower()) + b":%s\n%s")
        self._signature = _literal(names.signature) + b": " + SIGNATURE_FORMAT
        if identity is not None:
            key = identity.signing_keys[0]
            self._key_id = key.id.encode("ascii")
            self._mac = _Mac(key.secret)
        self._trunks = {t.name: self._precompute(t.name, t.attributes) for t in trunks}

    def __repr__(self) -> str:
        return f"Stamper(signed={self._mac is not None}, trunks={len(self._trunks)})"

    def _precompute(self, trunk: str, attributes: Iterable[tuple[str, str]]) -> _Trunk:
        names = self._names
        value = trunk.encode("utf-8")
        prefix = names.prefix.decode("ascii")
        attrs = [
            (attribute_header(prefix, name).encode("ascii"), text.encode("utf-8"))
            for name, text in attributes
        ]
        lines = (names.trunk + b": " + value, *(b"%s: %s" % pair for pair in attrs))
        covered = b"%s:%s\n" % (names.trunk.lower(), value)
        # Canonical order: by lowercase name (the header's case could sort otherwise).
        attr_lines = b"".join(
            b"%s:%s\n" % pair for pair in sorted((n.lower(), v) for n, v in attrs)
        )
        auth = names.auth.lower()
        ip, digest = (
            covered + b"%s:%s\n" % (auth, m.value.encode()) + attr_lines for m in _METHODS
        )
        return _Trunk(lines, (ip, digest))

    def lines(
        self,
        trunk: str,
        user: str,
        source: tuple[str, int],
        call_id: bytes,
        cseq: tuple[int, bytes],
        from_tag: bytes | None,
        now: float,
    ) -> list[bytes]:
        """The header lines (without CRLF) for a request `trunk` admitted: by digest as
        `user`, or by address when `user` is empty. `source` is the socket peer (an IP literal
        without brackets and a port); `now` the wall clock in seconds since the epoch."""
        stamp = self._trunks.get(trunk)
        if stamp is None:  # admitted before a reload that removed the trunk: no attributes
            stamp = self._precompute(trunk, ())
        if user:
            user_value = user.encode("utf-8", "replace")
            out = [stamp.lines[0], self._user + user_value, *stamp.lines[1:]]
        else:
            out = list(stamp.lines)
        mac = self._mac
        if mac is None:
            return out
        host, port = source
        where = (b"[%s]:%d" if ":" in host else b"%s:%d") % (host.encode("ascii"), port)
        timestamp = int(now)
        tag = from_tag or b""
        number, method = cseq
        key_id = self._key_id
        if user:
            form = self._forms[1] % (
                key_id,
                timestamp,
                call_id,
                number,
                method,
                tag,
                where,
                user_value,
                stamp.tails[1],
            )
        else:
            form = self._forms[0] % (
                key_id,
                timestamp,
                call_id,
                number,
                method,
                tag,
                where,
                stamp.tails[0],
            )
        out.append(self._auth[1 if user else 0])
        out.append(self._source + where)
        out.append(self._signature % (key_id, timestamp, mac.hex(form)))
        return out


_METHODS: Final = (AuthMethod.IP, AuthMethod.DIGEST)  # the order of `_Trunk.tails`
