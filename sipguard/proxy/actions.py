"""What the core decides, as values: `Reply`, `Forward`, `Drop`, each with a bounded `Cause`.

Owns: the vocabulary between the sans-IO core and the shell. The shell executes actions and
makes no SIP decision of its own; logs and metrics are derived from `Cause` and `Info`, whose
values come from bounded sets (the trunk name comes from the config).

Never imports I/O, logging or metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import NamedTuple

from sipguard.policy.guard import BanEvent
from sipguard.sip import Request

__all__ = [
    "ACCOMPANYING_CAUSES",
    "Action",
    "Address",
    "BanEvent",
    "Cause",
    "Drop",
    "Forward",
    "Info",
    "Reply",
    "Transport",
]


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

    # Members are singletons: hashed by identity, in C. Enum's own `__hash__` is a Python call
    # on every dict or set look-up of a cause (metrics, logs, `accompanies`: ~3 per message).
    __hash__ = object.__hash__

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
    TRUNK_LIMITED = "trunk_limited"  # a trunk's own limit (rate, concurrent calls): 503
    SCANNER = "scanner"  # a known scanner's User-Agent
    KEEPALIVE = "keepalive"  # RFC 5626 CRLF ping
    # traffic from the upstream
    FROM_UPSTREAM = "from_upstream"  # request from the upstream, routed by Route/R-URI
    RESPONSE = "response"  # a response relayed by our Via
    UPSTREAM_ERROR = "upstream_error"  # the upstream cannot be reached: 503
    FAILOVER = "failover"  # sent to the next upstream; a failed branch's ACK or answer
    PROBE = "probe"  # an OPTIONS health probe of an upstream, or its answer
    STATE_ERROR = "state_error"  # shared state unreachable with state.on_error: refuse: 503
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


# Causes whose Reply accompanies a Forward of the same message: the 200 sipguard sends to a
# CANCEL it relays (RFC 3261 §16.10). The Forward is the decision (one log line, one request).
ACCOMPANYING_CAUSES = frozenset({Cause.CANCEL_FORWARDED})


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `data` (a response we built) back to `to`: from the listener `local` (UDP), or over
    stream `connection` when it is still open (else over any connection to `to`).

    Its status is `info.status` (the core sets it on every reply it builds) and `accompanies`
    says whether a Forward of the same message goes with it: the shell reads these values and
    never the bytes."""

    data: bytes
    to: Address
    local: Address | None
    connection: int | None
    cause: Cause
    info: Info = field(default_factory=Info)

    @property
    def status(self) -> int:
        return self.info.status

    @property
    def accompanies(self) -> bool:
        return self.cause in ACCOMPANYING_CAUSES


class Origin(NamedTuple):
    """The request a Forward carries out, as received, and where it came from: what the core
    needs to answer its sender when the Forward cannot be delivered (no bytes parsed again)."""

    request: Request
    source: Address
    local: Address
    connection: int | None


@dataclass(frozen=True, slots=True)
class Forward:
    """Send `data` (a request or response we relay) to `to`.

    `local` is the listener whose address our Via names (UDP: send from that socket, so answers
    come back to it); `connection` names the stream connection to use when the message must go
    back on an existing one; None lets the shell use any open connection to `to` or open one.
    `origin`: for a request sipguard sends on, the request as received and its sender."""

    data: bytes
    to: Address
    local: Address | None
    connection: int | None
    cause: Cause
    info: Info = field(default_factory=Info)
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing. `close` asks the shell to close a stream connection (framing is lost)."""

    cause: Cause
    info: Info = field(default_factory=Info)
    close: bool = False


Action = Reply | Forward | Drop


# ---------------------------------------------------------------- shared state (DESIGN §7)
# Only with a shared state backend (`state.backend: redis`); the core never awaits: it leaves a
# question as a value in `Core.questions` and resumes with the answer.


@dataclass(frozen=True, slots=True)
class AskNonceCount:
    """Admission needs the nonce-count verdict of every instance (one atomic call): the shell
    asks `SharedState.count_nonce(nonce, nonce_count, expires_at - now)` and executes the actions
    of `resume(answer, now)`; answer None = shared state unavailable (the core then decides on
    its local view, or refuses, as `state.on_error` says)."""

    nonce: str
    nonce_count: int
    expires_at: float  # epoch seconds, from the nonce itself
    resume: Callable[[bool | None, float], list[Action]] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ShareFailure:
    """A failed authentication of `ip`, already counted here: the shell counts it in the shared
    window of `window` seconds and hands the count to `Core.shared_failures`; `nonce` (until
    `nonce_expires_at`), when set, is killed everywhere (a wrong answer kills its nonce); a ban the
    local count placed (`ban_until`) is published too, so it spreads even when the shared count
    missed failures during an outage."""

    ip: str
    window: float
    nonce: str | None = None
    nonce_expires_at: float = 0.0
    ban_until: float = 0.0  # this failure banned `ip` here (local count): published as well


# What the core leaves in `Core.questions` for the shell when state is shared.
Question = AskNonceCount | ShareFailure
