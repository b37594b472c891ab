"""What the core decides, as values: `Reply`, `Forward`, `Drop`, each with a bounded `Cause`.

Owns: the vocabulary between the sans-IO core and the shell. The shell executes actions and
makes no SIP decision of its own; logs and metrics are derived from `Cause` and `Info`, whose
values come from bounded sets (the trunk name comes from the config).

Never imports I/O, logging or metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import NamedTuple


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def is_stream(self) -> bool:
        return self is not Transport.UDP


@dataclass(frozen=True, slots=True)
class Address:
    """A transport endpoint: an IP literal (no brackets, no zone) and a port."""

    transport: Transport
    host: str
    port: int


class Cause(Enum):
    """Why the core did what it did. Closed set: one metric label value and log `cause` each."""

    # requests from outside
    ADMITTED_IP = "admitted_ip"  # a trunk without credentials trusts the source address
    ADMITTED_DIGEST = "admitted_digest"  # correct digest credentials for a candidate trunk
    IN_DIALOG = "in_dialog"  # in-dialog request (To-tag, our Record-Route) from an allowed source
    CHALLENGED = "challenged"  # no credentials for our realm: 401/407
    STALE_NONCE = "stale_nonce"  # right answer to an expired nonce: challenge with stale=true
    AUTH_FAILED = "auth_failed"  # wrong password, unknown user, expired credential, replay...
    ACL_DENIED = "acl_denied"  # no trunk admits the source address
    PARSE_ERROR = "parse_error"  # malformed message
    TOO_LARGE = "too_large"  # a size limit was exceeded
    TOO_MANY_HOPS = "too_many_hops"  # Max-Forwards reached zero
    LOOP_DETECTED = "loop_detected"  # the request already passed through us
    BAD_EXTENSION = "bad_extension"  # Proxy-Require with options we do not support
    UNSUPPORTED_URI_SCHEME = "unsupported_uri_scheme"  # Request-URI not sip/sips/tel
    OPTIONS_ANSWERED = "options_answered"  # OPTIONS addressed to sipguard itself
    ACK_ABSORBED = "ack_absorbed"  # the ACK for our own 401/407/403
    CANCEL_FORWARDED = "cancel_forwarded"  # CANCEL answered 200 and sent on the INVITE's branch
    STRAY = "stray"  # ACK/CANCEL/response that matches nothing: dropped, no state
    BANNED = "banned"  # the source is banned after failed authentications
    RATE_LIMITED = "rate_limited"  # the source exceeded its request rate
    SCANNER = "scanner"  # a known scanner's User-Agent
    KEEPALIVE = "keepalive"  # RFC 5626 CRLF ping
    # traffic from the upstream
    FROM_UPSTREAM = "from_upstream"  # request from the upstream, routed by Route/R-URI
    RESPONSE = "response"  # a response relayed by our Via
    UPSTREAM_ERROR = "upstream_error"  # the upstream cannot be reached: 503
    FAILOVER = "failover"  # sent to the next upstream; a failed branch's ACK or answer
    PROBE = "probe"  # an OPTIONS health probe of an upstream, or its answer
    # the shell's own
    BUG = "bug"  # an exception escaped: a defect, counted and dropped


class Info(NamedTuple):
    """What a decision was about, for logs (and, bounded, for metrics).

    A NamedTuple rather than a frozen dataclass: as immutable, read by attribute the same way,
    and built several times per message; a frozen dataclass's `__init__` (one
    `object.__setattr__` per field) cost ~5x as much, ~4% of the core per call."""

    method: str = ""  # request method, or the CSeq method of a response
    call_id: str = ""
    trunk: str = ""  # the trunk that admitted it (name from config)
    user: str = ""  # the authenticated digest username
    status: int = 0  # status of the reply sent or the response relayed
    detail: str = ""  # a short human reason (never a secret)


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `data` (a response we built) back to `to`: from the listener `local` (UDP), or over
    stream `connection` when it is still open (else over any connection to `to`)."""

    data: bytes
    to: Address
    local: Address | None
    connection: int | None
    cause: Cause
    info: Info = field(default_factory=Info)


@dataclass(frozen=True, slots=True)
class Forward:
    """Send `data` (a request or response we relay) to `to`.

    `local` is the listener whose address our Via names (UDP: send from that socket, so answers
    come back to it); `connection` names the stream connection to use when the message must go
    back on an existing one; None lets the shell use any open connection to `to` or open one."""

    data: bytes
    to: Address
    local: Address | None
    connection: int | None
    cause: Cause
    info: Info = field(default_factory=Info)


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing. `close` asks the shell to close a stream connection (framing is lost)."""

    cause: Cause
    info: Info = field(default_factory=Info)
    close: bool = False


Action = Reply | Forward | Drop


@dataclass(frozen=True, slots=True)
class BanEvent:
    """A source was banned (or unbanned, `until` == 0) by the guard; the shell logs it."""

    ip: str
    until: float
    failures: int = 0
