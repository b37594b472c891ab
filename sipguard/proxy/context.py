"""What every step of the core reads: the compiled config, the process's state, one message.

Owns: `Config` (everything derived from `Settings` once per load, swapped whole by
`Core.reconfigure`), `State` (what outlives a reload: keys, memory tables, nonce counts, the
guard) and `Context` (one request being decided: the message, where it came from, `now`, the
config it is decided under), `SourcePlan` (what the config implies for one source address,
derived once per address and config: `Config.plans`), and `Admitted`, the verdict admission
hands to forwarding. Passing one `Context` replaces long argument lists.

Never does: I/O, clocks, SIP decisions. Nothing here is built per message but `Context`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from sipguard.auth.credentials import CredentialStore
from sipguard.auth.nonce import NonceIssuer, NonceTracker
from sipguard.identity import InboundFilter, Stamper
from sipguard.policy.guard import BanEvent, Guard
from sipguard.policy.limits import TrunkLimiter
from sipguard.policy.whitelist import SourceMatcher
from sipguard.proxy.actions import Address, Cause, Info, Question, Transport
from sipguard.proxy.memory import Admission, ExpiringTable
from sipguard.proxy.outgoing import Fragments, Line
from sipguard.settings import Settings, Trunk
from sipguard.sip import ParserLimits, Request

# What a retransmission repeats and a new request changes (`digest_check.retransmission_key`): the
# source, the digest nonce, nonce-count and cnonce, the top Via branch, Call-ID, CSeq number.
RetransmissionKey = tuple[str, str, int, str, bytes, bytes, int]


class SourcePlan(NamedTuple):
    """What the config implies for requests from one source address, derived once per address
    and config (`admission.plan_for`, kept in `Config.plans`) instead of once per request."""

    trunks: tuple[Trunk, ...]  # the candidate trunks (`SourceMatcher.candidates`), in order
    ip_trunk: Trunk | None  # the first that admits the source by address alone; None: digest
    algorithms: tuple[str, ...]  # the challenge's, in order (DESIGN §3)
    # the trunks whose secrets an answer is checked against (`CredentialStore.check`): None
    # when they hold every configured credential (no filter to apply)
    names: frozenset[str] | None
    throttled: bool  # its challenges pass the anonymous per-source rate bucket


@dataclass(frozen=True, slots=True)
class Config:
    """The running config, compiled: built by `Core.reconfigure`, never changed after."""

    settings: Settings
    parser_limits: ParserLimits
    matcher: SourceMatcher
    store: CredentialStore
    realm: str
    opaque: str
    refuse_drop: bool  # auth.refuse: drop instead of 403
    rate_drop: bool  # protection.rate_action: drop instead of 503
    upstreams: tuple[Address, ...]
    upstream_endpoints: frozenset[tuple[str, int]]
    listeners: tuple[Address, ...]
    # the shell's own upstream-facing UDP sockets, one per address family (bound ports)
    upstream_sockets: tuple[Address, ...]
    # (host, port) of every listener and upstream-facing socket: "us" in URIs and Vias
    own: frozenset[tuple[str, int]]
    # what our lines start with, per listener and upstream-facing socket (transport, host, port)
    fragments: dict[tuple[Transport, str, int], Fragments]
    stamper: Stamper  # the identity lines an admitted request gets (trunk, user, signature...)
    inbound: InboundFilter  # the header lines a request from outside loses
    needs_index: re.Pattern[bytes]  # outgoing.needs_index: a request with lines to strip or edit
    route_to_us: re.Pattern[bytes]  # outgoing.route_to_us: our Record-Route values as written
    # source address -> its `SourcePlan`, filled on first use (bounded: `admission.plan_for`)
    plans: dict[str, SourcePlan]


class State:
    """What the core keeps across messages and reloads: keys, admitted transactions and dialogs,
    nonce counts, recently admitted digest answers, the guard and pending ban events."""

    __slots__ = (
        "answered",
        "branch_key",
        "counter",
        "dialogs",
        "events",
        "guard",
        "issuer",
        "limiter",
        "questions",
        "tracker",
        "transactions",
        "unique_prefix",
    )

    def __init__(
        self,
        issuer: NonceIssuer,
        branch_key: bytes,
        unique_prefix: bytes,
        tracker: NonceTracker,
        guard: Guard,
        table_size: int,
    ) -> None:
        self.issuer = issuer
        self.branch_key = branch_key
        self.unique_prefix = unique_prefix
        self.counter = 0
        self.tracker = tracker
        self.guard = guard
        self.transactions: ExpiringTable[tuple[str, bytes, bytes], Admission] = ExpiringTable(
            table_size
        )
        self.dialogs: ExpiringTable[bytes, Admission] = ExpiringTable(table_size)
        # Digest answers admitted in the last RETRANSMISSION_TTL seconds, by everything that
        # identifies the request (source, nonce, nc, cnonce, top Via branch, Call-ID, CSeq):
        # a UDP retransmission repeats its nonce-count and must be forwarded again, not refused
        # as a replay (RFC 3261 §16.11: a stateless proxy forwards retransmissions).
        self.answered: ExpiringTable[RetransmissionKey, bool] = ExpiringTable(table_size)
        self.events: list[BanEvent] = []
        # Per-trunk rates and calls in progress (issue 17); `Core.reconfigure` sets the limits.
        self.limiter = TrunkLimiter()
        # With shared state (DESIGN §7): what a decision needs from, or tells, other instances.
        # A decision waiting for an answer returns no action and leaves its `AskNonceCount`
        # here; the shell drains the list after every call into the core and resumes it.
        self.questions: list[Question] = []

    def next_unique(self) -> bytes:
        """8 bytes no other nonce of this process (and boot) carries."""
        self.counter = (self.counter + 1) & 0xFFFFFFFF
        return self.unique_prefix + self.counter.to_bytes(4, "big")


class Admitted(NamedTuple):
    """The verdict that lets a request through: why, for which trunk and user, and which of its
    credential headers are ours (header index -> ours), so forwarding need not parse them again."""

    cause: Cause
    info: Info
    credentials: dict[int, bool] | None = None


class Pending(NamedTuple):
    """The verdict of a right digest answer whose nonce-count other instances must confirm
    (shared state): the core asks the shell (`AskNonceCount`) and concludes with the answer."""

    check: Any  # digest_check.DigestCheck
    plan: SourcePlan
    info: Info
    expiry: float


class Context(NamedTuple):
    """One request being decided. A NamedTuple: built once per message, read by attribute."""

    cfg: Config
    st: State
    msg: Request
    source: Address
    local: Address
    connection: int | None
    now: float
    ip: str  # the source's address as bans, rates and dialogs know it (IPv4-mapped unwrapped)
    # read on the parser's fast path with nothing cfg.needs_index finds: no Route, Proxy-Require,
    # credentials or headers we strip; positions come from the parser's match, no header index
    plain: bool
    # on the fast path, the lines cfg.needs_index finds (`outgoing.edited_lines`, one scan per
    # message: admission reads the credentials and Proxy-Require there, forwarding the lines it
    # edits); None when not scanned (the general path; the readers then scan or index)
    found: list[Line] | None = None
