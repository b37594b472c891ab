"""The identity headers and the canonical form their signature covers (sans-IO).

Owns: the names of the headers sipguard attaches (`HeaderNames`, built from the configured
prefix), the header name of a trunk attribute, the rules for attribute names and values,
signing key ids and the prefix (the config loader reports what they return), the canonical
form (`canonical`) and the signature header's syntax (`format_signature`, `parse_signature`).

Never does: compute a MAC (`sign`, `verify` do), read the clock, files or the environment,
parse whole SIP messages.

The canonical form (version 1) is a byte string of lines, each ending in LF, in this order:

    sipguard-identity-1
    key:<key id>
    time:<timestamp, decimal seconds since the epoch>
    call-id:<Call-ID value>
    cseq:<CSeq number> <CSeq method>
    from-tag:<the tag parameter of From>
    <prefix>source:<value>          e.g. x-sipguard-source:203.0.113.7:5060
    <prefix>user:<value>            only when the header is present (digest admission)
    <prefix>trunk:<value>
    <prefix>auth:<value>            ip | digest
    <prefix>attr-<name>:<value>     every attribute header, sorted by lowercase name

Header names are lowercase; values are the header values as a SIP parser reads them (folds
unfolded, surrounding whitespace removed), UTF-8. No value can hold a LF (RFC 3261 §7.3.1), no
name a colon, so the form is unambiguous. The signature header reads
`v=1;kid=<key id>;ts=<timestamp>;mac=<64 lowercase hex digits of HMAC-SHA-256(key, form)>`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from sipguard.settings import DEFAULT_HEADER_PREFIX

__all__ = [
    "FORM_HEAD",
    "MAX_ATTRIBUTE_NAME",
    "MAX_ATTRIBUTE_VALUE",
    "SIGNATURE_FORMAT",
    "VERSION",
    "AuthMethod",
    "HeaderNames",
    "Signature",
    "attribute_header",
    "attribute_name_problem",
    "attribute_value_problem",
    "canonical",
    "format_signature",
    "key_id_problem",
    "parse_signature",
    "prefix_problem",
]

VERSION: Final = b"sipguard-identity-1"
# The first lines of the canonical form: % (key id, timestamp, Call-ID, CSeq number, CSeq
# method, From tag). The signer's templates start with it too.
FORM_HEAD: Final = VERSION + b"\nkey:%s\ntime:%d\ncall-id:%s\ncseq:%d %s\nfrom-tag:%s\n"
# The signature header value: % (key id, timestamp, MAC as 64 lowercase hex digits).
SIGNATURE_FORMAT: Final = b"v=1;kid=%s;ts=%d;mac=%s"
# Bounds: an attribute is a short label (an org id, a plan), never a document; a whole header
# line stays far below `Limits.max_line_bytes` and the upstream's own limits.
MAX_ATTRIBUTE_NAME: Final = 64
MAX_ATTRIBUTE_VALUE: Final = 256
MAX_KEY_ID: Final = 32
MAX_PREFIX: Final = 32
# Attribute names: letters, digits, '-' and '_' (RFC 3261 §25.1 token characters, the subset
# that maps to a readable header name: org_id -> Attr-Org-Id).
_ATTRIBUTE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
# A header name prefix: token characters (RFC 3261 §25.1).
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HEX64_RE: Final = re.compile(rb"[0-9a-f]{64}")
_TS_MAX_DIGITS: Final = 12


class AuthMethod(Enum):
    """How the trunk admitted the request: `X-Sipguard-Auth`."""

    IP = "ip"  # the source address alone (a trunk without credentials)
    DIGEST = "digest"  # a digest answer checked by sipguard


@dataclass(frozen=True, slots=True)
class HeaderNames:
    """The names of the headers sipguard attaches, as sent (`trunk`...) and as lowercase
    keys (`trunk_key`...). `attr` is the prefix of attribute headers (`X-Sipguard-Attr-`)."""

    prefix: bytes
    trunk: bytes
    user: bytes
    auth: bytes
    source: bytes
    attr: bytes
    signature: bytes

    @classmethod
    def of(cls, prefix: str = DEFAULT_HEADER_PREFIX) -> HeaderNames:
        p = prefix.encode("ascii")
        return cls(
            p, p + b"Trunk", p + b"User", p + b"Auth", p + b"Source", p + b"Attr-", p + b"Identity"
        )

    @property
    def prefix_key(self) -> bytes:
        return self.prefix.lower()


def attribute_header(prefix: str, name: str) -> str:
    """The header carrying attribute `name`: `org_id` -> `X-Sipguard-Attr-Org-Id`."""
    parts = re.split(r"[-_]", name)
    return prefix + "Attr-" + "-".join(part.capitalize() for part in parts if part)


def attribute_name_problem(name: str) -> str | None:
    """Why `name` cannot be an attribute name, or None."""
    if not 1 <= len(name) <= MAX_ATTRIBUTE_NAME:
        return f"must be 1 to {MAX_ATTRIBUTE_NAME} characters"
    if not _ATTRIBUTE_NAME_RE.fullmatch(name):
        return "must start with a letter or digit and hold only letters, digits, '-' and '_'"
    return None


def attribute_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as a header value, or None. A CR, LF or other control
    character would end the header line (header injection); leading or trailing whitespace
    is removed by every SIP parser, so the platform would read another value."""
    if not value:
        return "must not be empty"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ATTRIBUTE_VALUE:
        return f"longer than {MAX_ATTRIBUTE_VALUE} bytes"
    if not value.isprintable():
        return "holds a control or non-printable character (a header line cannot carry it)"
    if value != value.strip():
        return "has leading or trailing whitespace"
    return None


def key_id_problem(key_id: str) -> str | None:
    if not 1 <= len(key_id) <= MAX_KEY_ID or not _KEY_ID_RE.fullmatch(key_id):
        return f"must be 1 to {MAX_KEY_ID} letters, digits, '.', '-' or '_'"
    return None


def prefix_problem(prefix: str) -> str | None:
    if not 1 <= len(prefix) <= MAX_PREFIX or not _PREFIX_RE.fullmatch(prefix):
        return f"must be 1 to {MAX_PREFIX} header name characters (letters, digits, '-'...)"
    return None


def canonical(
    key_id: bytes,
    timestamp: int,
    call_id: bytes,
    cseq: tuple[int, bytes],
    from_tag: bytes,
    covered: Sequence[tuple[bytes, bytes]],
) -> bytes:
    """The canonical form (module docstring). `covered` holds the lowercase names and values
    of the prefix headers in the documented order (source, user, trunk, auth, attributes
    sorted); the verifier builds it from the message, the signer from what it attaches."""
    head = FORM_HEAD % (key_id, timestamp, call_id, cseq[0], cseq[1], from_tag)
    return head + b"".join(b"%s:%s\n" % pair for pair in covered)


@dataclass(frozen=True, slots=True)
class Signature:
    """A parsed signature header value."""

    key_id: bytes
    timestamp: int
    mac: bytes  # 64 lowercase hex digits


def format_signature(key_id: bytes, timestamp: int, mac_hex: bytes) -> bytes:
    return SIGNATURE_FORMAT % (key_id, timestamp, mac_hex)


def parse_signature(value: bytes) -> Signature | None:
    """The parts of a signature header value, or None when it is not one (any order of the
    four parameters, whitespace around them tolerated, each exactly once)."""
    params: dict[bytes, bytes] = {}
    for part in value.split(b";"):
        name, eq, item = part.partition(b"=")
        name = name.strip(b" \t").lower()
        if not eq or name in params:
            return None
        params[name] = item.strip(b" \t")
    if params.keys() != {b"v", b"kid", b"ts", b"mac"} or params[b"v"] != b"1":
        return None
    key_id, ts, mac = params[b"kid"], params[b"ts"], params[b"mac"].lower()
    if key_id_problem(key_id.decode("latin-1")) is not None:
        return None
    if not (ts.isdigit() and ts.isascii() and len(ts) <= _TS_MAX_DIGITS):
        return None
    if not _HEX64_RE.fullmatch(mac):
        return None
    return Signature(key_id, int(ts), mac)
