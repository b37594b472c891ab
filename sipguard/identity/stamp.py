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

import hmac
from collections.abc import Iterable
from typing import Final, NamedTuple

from sipguard.identity.headers import (
    AuthMethod,
    HeaderNames,
    attribute_header,
    canonical,
    format_signature,
)
from sipguard.settings import DEFAULT_HEADER_PREFIX, IdentitySettings, Trunk

__all__ = ["ALWAYS_STRIPPED", "InboundFilter", "Stamper"]

# Stripped from requests from outside whatever the config says: the upstream trusts them as
# asserted by sipguard (RFC 3325 §9.1 P-Asserted-Identity; X-Authenticated-User of some PBXes).
ALWAYS_STRIPPED: Final = frozenset({b"p-asserted-identity", b"x-authenticated-user"})


class _Trunk(NamedTuple):
    """What a trunk adds to every request it admits, precomputed at load."""

    lines: tuple[bytes, ...]  # trunk and attribute header lines, without CRLF
    tails: dict[AuthMethod, bytes]  # canonical lines from `<prefix>trunk:` to the last attribute


class InboundFilter:
    """Which header keys (lowercase, compact forms expanded) are removed from a request from
    outside before anything reads it."""

    __slots__ = ("_keys", "_prefix")

    def __init__(self, identity: IdentitySettings | None) -> None:
        prefix = identity.header_prefix if identity is not None else DEFAULT_HEADER_PREFIX
        self._prefix = prefix.lower().encode("ascii")
        extra = identity.strip_inbound if identity is not None else ()
        self._keys = ALWAYS_STRIPPED | {name.lower().encode("ascii") for name in extra}

    def strips(self, key: bytes) -> bool:
        return key.startswith(self._prefix) or key in self._keys


class Stamper:
    """The header lines attached to an admitted request (DESIGN §4 step 4)."""

    __slots__ = ("_auth_keys", "_key_id", "_names", "_secret", "_source_key", "_trunks", "_user")

    def __init__(self, identity: IdentitySettings | None, trunks: Iterable[Trunk]) -> None:
        self._names = HeaderNames.of(
            identity.header_prefix if identity is not None else DEFAULT_HEADER_PREFIX
        )
        self._secret: bytes | None = None
        self._key_id = b""
        if identity is not None:
            key = identity.signing_keys[0]
            self._secret = key.secret
            self._key_id = key.id.encode("ascii")
        names = self._names
        self._source_key = names.source.lower()
        self._user = names.user.lower()
        self._auth_keys = {
            m: b"%s:%s\n" % (names.auth.lower(), m.value.encode()) for m in AuthMethod
        }
        self._trunks = {t.name: self._precompute(t.name, t.attributes) for t in trunks}

    def __repr__(self) -> str:
        return f"Stamper(signed={self._secret is not None}, trunks={len(self._trunks)})"

    def _precompute(self, trunk: str, attributes: Iterable[tuple[str, str]]) -> _Trunk:
        names = self._names
        value = trunk.encode("utf-8")
        prefix = names.prefix.decode("ascii")
        attrs = [
            (attribute_header(prefix, name).encode("ascii"), text.encode("utf-8"))
            for name, text in attributes
        ]
        lines = (names.trunk + b": " + value, *(b"%s: %s" % pair for pair in attrs))
        if self._secret is None:
            return _Trunk(lines, {})
        covered = b"%s:%s\n" % (names.trunk.lower(), value)
        # Canonical order: by lowercase name (the header's case could sort otherwise).
        attr_lines = b"".join(
            b"%s:%s\n" % pair for pair in sorted((n.lower(), v) for n, v in attrs)
        )
        tails = {m: covered + self._auth_keys[m] + attr_lines for m in AuthMethod}
        return _Trunk(lines, tails)

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
        names = self._names
        user_value = user.encode("utf-8", "replace")
        out = list(stamp.lines)
        if user:
            out.insert(1, names.user + b": " + user_value)
        secret = self._secret
        if secret is None:
            return out
        method = AuthMethod.DIGEST if user else AuthMethod.IP
        host, port = source
        where = (b"[%s]:%d" if ":" in host else b"%s:%d") % (host.encode("ascii"), port)
        covered = b"%s:%s\n" % (self._source_key, where)
        if user:
            covered += b"%s:%s\n" % (self._user, user_value)
        timestamp = int(now)
        form = canonical(self._key_id, timestamp, call_id, cseq, from_tag or b"", ())
        mac = hmac.digest(secret, form + covered + stamp.tails[method], "sha256").hex()
        out.append(names.auth + b": " + method.value.encode())
        out.append(names.source + b": " + where)
        out.append(
            names.signature + b": " + format_signature(self._key_id, timestamp, mac.encode())
        )
        return out
