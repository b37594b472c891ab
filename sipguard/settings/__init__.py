"""The validated configuration of sipguard, as frozen values.

Owns: the types every layer reads its configuration from (`Settings`, `Listener`, `Upstream`,
`UpstreamHealth`, `AuthSettings`, `Trunk`, `TrunkLimits`, `AdminSettings`, `Credential`, `Rule`,
`Limits`, `Protection`, `IdentitySettings`...), and the named defaults of every limit, each with
the reason for its value. Whitelist entries are held parsed (`Rule`: the config loader parses
each once with `policy.whitelist.parse_rule`; matching and the shell use the intervals, never
the text again).

Never does: read files, YAML or the environment, resolve names, hash passwords (digest math
belongs to `sipguard.auth`). It imports only the standard library's dataclasses, enum, datetime
and typing. Validation with operator-facing messages (`FILE: key.path: problem`) is done by
`sipguard.config` before these values are built; the few checks in `__post_init__` only guard
against programming errors in code that builds settings by hand (tests, tools).

Secret fields (passwords, HA1 values, the nonce key) are `repr=False` and excluded from `hash`,
so they never reach a log line or a traceback through a repr.

What a reload changed (`diff_settings`) is `settings.diff`. Whole types live in sibling modules
and are re-exported here: identity signing (`settings.identity`), the metrics endpoint, admin
listener and log (`settings.service`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# Whole types kept in sibling modules, re-exported: `from sipguard.settings import X` for every X.
from sipguard.settings.identity import DEFAULT_HEADER_PREFIX as DEFAULT_HEADER_PREFIX
from sipguard.settings.identity import DEFAULT_STRIP_INBOUND as DEFAULT_STRIP_INBOUND
from sipguard.settings.identity import IdentitySettings as IdentitySettings
from sipguard.settings.identity import SigningKey as SigningKey
from sipguard.settings.service import MIN_ADMIN_TOKEN_BYTES as MIN_ADMIN_TOKEN_BYTES
from sipguard.settings.service import AdminSettings as AdminSettings
from sipguard.settings.service import LogSettings as LogSettings
from sipguard.settings.service import MetricsSettings as MetricsSettings

TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")
# RFC 8760 names; RFC 7616 §3.2 order of preference is the operator's to choose.
ALGORITHMS: tuple[str, ...] = ("MD5", "SHA-256", "SHA-512-256")
# Length in hex digits of an HA1 value for each algorithm (RFC 7616 §3.4.2).
HA1_HEX_LENGTH: Mapping[str, int] = {"MD5": 32, "SHA-256": 64, "SHA-512-256": 64}
REFUSE_ACTIONS: tuple[str, ...] = ("403", "drop")
RATE_ACTIONS: tuple[str, ...] = ("503", "drop")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[str, ...] = ("json", "console", "auto")
DEFAULT_PORTS: Mapping[str, int] = {"udp": 5060, "tcp": 5060, "tls": 5061}  # RFC 3261 §19.1.2
WILDCARD_HOSTS: tuple[str, ...] = ("0.0.0.0", "::")  # noqa: S104  # the unspecified addresses


def _bracket(host: str) -> str:
    """An IPv6 literal in brackets, as RFC 3261 §25.1 (IPv6reference) and RFC 3986 want it."""
    return f"[{host}]" if ":" in host else host


def _check_endpoint(kind: str, transport: str, port: int) -> None:
    if transport not in TRANSPORTS:
        raise ValueError(f"{kind}: transport must be one of {', '.join(TRANSPORTS)}")
    if not 1 <= port <= 65535:
        raise ValueError(f"{kind}: port must be 1..65535")


@dataclass(frozen=True, slots=True)
class Listener:
    """Where sipguard accepts SIP traffic. `host` is an IP literal without brackets or zone.

    `advertise`: the (host, port) our Via, Record-Route and Path name for this listener, where
    it differs from the socket's: a wildcard listener (`0.0.0.0`, `::`), an address behind
    NAT. None: the socket's own."""

    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int
    advertise: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        _check_endpoint("listener", self.transport, self.port)

    @property
    def url(self) -> str:
        """The config spelling: `udp://127.0.0.1:5060`, `tls://[::1]:5061`."""
        return f"{self.transport}://{_bracket(self.host)}:{self.port}"

    @property
    def named(self) -> tuple[str, int]:
        """The (host, port) peers reach this listener at: `advertise`, else the socket's."""
        return self.advertise or (self.host, self.port)

    @property
    def is_wildcard(self) -> bool:
        """Bound to every local address (`0.0.0.0`, `::`): not an address a peer can send to."""
        return self.host in WILDCARD_HOSTS

    @property
    def is_stream(self) -> bool:
        return self.transport != "udp"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Server-side TLS for tls:// listeners (RFC 3261 §26.3.1, RFC 5630)."""

    certificate: str  # path of a PEM certificate chain
    private_key: str  # path of the PEM private key (the path, never the key)
    ca_file: str | None = None  # CA bundle used to verify client certificates
    verify_client: bool = False  # require a client certificate signed by ca_file
    handshake_timeout: float = 10.0  # seconds; half-open handshakes are SECURITY-CASES 9


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where admitted traffic goes, parsed from `sip:HOST[:PORT][;transport=udp|tcp|tls]`.

    HOST is an IP literal (IPv6 in brackets in `uri`, without them in `host`): sipguard does no
    DNS (RFC 3263) at runtime, so a name would be resolved once and silently go stale."""

    uri: str
    transport: str
    host: str
    port: int
    priority: int = 1  # lower is preferred; a higher one gets traffic only while none lower is up
    weight: int = 1  # share of the calls among the upstreams of one priority

    def __post_init__(self) -> None:
        _check_endpoint("upstream", self.transport, self.port)
        if self.priority < 0 or self.weight < 1:
            raise ValueError("upstream: priority must be >= 0 and weight >= 1")

    @property
    def hostport(self) -> str:
        return f"{_bracket(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class UpstreamHealth:
    """OPTIONS probing of the upstreams and failover of initial requests (issue 14)."""

    # Seconds between two probes of one upstream; 0 turns probing off (every upstream stays up).
    probe_interval: float = 5.0
    # Seconds to wait for a probe's final answer before it counts as one failure.
    probe_timeout: float = 2.0
    # Consecutive failed probes that mark an upstream down: one lost datagram is not an outage.
    down_after: int = 3
    # Consecutive good probes that bring a down upstream back: a flapping one stays out a while.
    up_after: int = 2
    # Seconds without any response to a forwarded initial request before the next upstream is
    # tried; well under the client's Timer B/F (32 s) so the call is still saved.
    failover_timeout: float = 2.0
    # RFC 3261 Timer C (§16.6 step 11, "greater than 3 minutes"): seconds an INVITE branch may
    # ring (provisional answers, no final one) before sipguard CANCELs it and answers 408.
    timer_c: float = 180.0

    def __post_init__(self) -> None:
        positive = (self.probe_timeout, self.failover_timeout, self.timer_c)
        if self.probe_interval < 0 or min(positive) <= 0:
            raise ValueError("upstream_health: intervals and timeouts must be positive")
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError("upstream_health: down_after and up_after must be >= 1")


# A config without `upstream_health` probes nothing (it behaves as before pools existed); the
# class defaults above are those of a written section.
NO_PROBING = UpstreamHealth(probe_interval=0.0)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760)."""

    realm: str
    algorithms: tuple[str, ...] = ("MD5",)  # challenge order; many UAs read only the first
    nonce_ttl: int = 300  # seconds a nonce stays fresh before stale=true
    # The nonce signing key as loaded; None means a random key per process (nonces do not survive
    # a restart nor work across instances).
    secret: bytes | None = field(default=None, repr=False, hash=False)
    # Where the key came from, e.g. "file:/etc/sipguard/nonce.key"; never the key itself.
    secret_source: str = "random"  # noqa: S105 - a description, not a secret
    refuse: str = "403"  # how a refused source is answered: "403" or "drop"

    def __post_init__(self) -> None:
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if not self.algorithms or unknown:
            raise ValueError(f"auth: algorithms must be among {', '.join(ALGORITHMS)}")
        if self.refuse not in REFUSE_ACTIONS:
            raise ValueError("auth: refuse must be '403' or 'drop'")


@dataclass(frozen=True, slots=True)
class Credential:
    """One digest user. Exactly one of `password` and `ha1` is set.

    `ha1` maps an algorithm name to the lowercase hex HA1 for this username and the configured
    realm (RFC 7616 §3.4.2); a password from `password_env`/`password_file` is resolved at load
    time into `password`."""

    username: str
    password: str | None = field(default=None, repr=False, hash=False)
    ha1: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    valid_until: datetime | None = None  # aware, UTC; None: never expires
    # aware, UTC; None: valid from the start. With valid_until, one secret of a rotation.
    not_before: datetime | None = None

    def __post_init__(self) -> None:
        if (self.password is None) == (not self.ha1):
            raise ValueError(f"credential {self.username!r}: set exactly one of password and ha1")
        for moment in (self.valid_until, self.not_before):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(
                    f"credential {self.username!r}: valid_until and not_before must be "
                    "timezone-aware"
                )

    def is_valid_at(self, now: datetime) -> bool:
        return (self.valid_until is None or now < self.valid_until) and (
            self.not_before is None or now >= self.not_before
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """One whitelist entry as the inclusive interval [first, last] of one address family
    (`policy.whitelist` owns the grammar and builds these; `text` is the entry as written)."""

    text: str
    family: int  # 4 or 6
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class TrunkLimits:
    """What one trunk (a tenant) may use of the platform (issue 17); None: not limited.

    Enforced by `sipguard.policy.limits`: the per-second rates are token buckets holding two
    seconds' worth of tokens (`BURST_SECONDS` there)."""

    calls_per_second: float | None = None  # new INVITEs admitted per second
    concurrent_calls: int | None = None  # calls being set up or established at once
    registrations_per_second: float | None = None  # REGISTER requests admitted per second
    # Seconds after which a call whose BYE never came (lost, crashed peer) stops counting: 4 h,
    # like the dialog memory of the core, is longer than nearly every real call.
    max_call_duration: float = 14400.0

    def __post_init__(self) -> None:
        # Guards against programming errors; sipguard.config validates operator input.
        for rate in (self.calls_per_second, self.registrations_per_second):
            if rate is not None and not rate > 0:
                raise ValueError("trunk limits: a rate must be > 0")
        if self.concurrent_calls is not None and self.concurrent_calls < 0:
            raise ValueError("trunk limits: concurrent_calls must be >= 0")
        if not self.max_call_duration > 0:
            raise ValueError("trunk limits: max_call_duration must be > 0")

    @property
    def is_limited(self) -> bool:
        return (
            self.calls_per_second is not None
            or self.concurrent_calls is not None
            or self.registrations_per_second is not None
        )


@dataclass(frozen=True, slots=True)
class Trunk:
    """A group of sources trusted together: by address (whitelist), by digest, or both."""

    name: str
    whitelist: tuple[Rule, ...] = ()  # parsed entries; empty = any address
    credentials: tuple[Credential, ...] = ()  # empty = the whitelist alone admits (IP trust)
    algorithms: tuple[str, ...] | None = None  # overrides auth.algorithms for this trunk
    allow_open: bool = False  # operator accepted a trunk with neither whitelist nor credentials
    limits: TrunkLimits = field(default_factory=TrunkLimits)  # rates and concurrent calls
    # (name, value) pairs sent with every request this trunk admits (issue 16), config order;
    # names and values validated by `sipguard.config` (see `sipguard.identity.headers`).
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def requires_auth(self) -> bool:
        return bool(self.credentials)


@dataclass(frozen=True, slots=True)
class Limits:
    """Every resource bound, named, with the reason for its default."""

    # RFC 3261 §18.1.1: a UDP datagram cannot carry more; a bigger message is 513 (§21.5.14).
    max_message_bytes: int = 65535
    # Real requests carry < 40 headers; 256 leaves room and bounds the per-message header table.
    max_headers: int = 256
    # A header line (after unfolding) longer than this is an attack, not an Identity/SDP header.
    max_line_bytes: int = 8192
    # Request-URIs in the wild are < 256 bytes; 1 KiB bounds what routing and logs ever copy.
    max_uri_bytes: int = 1024
    # Each TCP/TLS connection costs a socket and buffers; caps total memory (SECURITY-CASES 9).
    max_connections: int = 10000
    # One source cannot starve the others; a busy PBX keeps only a few connections open.
    max_connections_per_source: int = 64
    # Seconds to receive one whole message on a stream: defeats slow-loris (SECURITY-CASES 6).
    read_deadline: float = 10.0
    # Seconds a stream may stay silent; above the RFC 5626 CRLF keep-alive interval of phones.
    idle_timeout: float = 300.0
    # Seconds to finish a TLS handshake: half-open handshakes hold a slot (SECURITY-CASES 9).
    tls_handshake_timeout: float = 10.0
    # Bounds nonce-count state so a challenge flood cannot grow memory (SECURITY-CASES 24, 33).
    nonce_table_size: int = 100000
    # Bounds admitted-transaction state used to match ACK/CANCEL (SECURITY-CASES 33, 34).
    transaction_table_size: int = 100000
    # Bounds the client transactions kept for failover of forwarded initial requests (issue 14):
    # 100 calls/s held up to Timer C (3 min) is 18000; when full the oldest loses its failover.
    client_transaction_table_size: int = 50000
    # Seconds to drain in-flight transactions on shutdown before closing sockets.
    shutdown_grace: float = 5.0


DEFAULT_SCANNER_USER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",  # sipvicious svmap/svwar/svcrack default
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "pplsip",
    "sip-scan",
)


@dataclass(frozen=True, slots=True)
class Protection:
    """Bans after failed authentication, per-source rate limits, scanner detection (issue 7)."""

    # Failed authentications from one source within ban_window seconds that trigger a ban.
    ban_failures: int = 5
    ban_window: float = 60.0
    # Seconds a ban lasts; long enough to make password guessing pointless.
    ban_duration: float = 600.0
    # Sources never banned nor rate limited (whitelist-format rules), e.g. a monitoring host.
    never_ban: tuple[Rule, ...] = ()
    # Unauthenticated requests per second per source (token bucket), and the bucket size.
    # 200 phones behind one NAT re-registering after an outage send ~400 requests at once
    # (REGISTER, 401, REGISTER) and then refresh at well under 50/s, so neither is refused.
    rate: float = 50.0
    burst: int = 400
    rate_action: str = "503"  # "503" (RFC 3261 §21.5.4, with Retry-After) or "drop"
    # Matched case-insensitively as substrings of User-Agent: well-known SIP scanners.
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNER_USER_AGENTS


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where state shared across workers and hosts lives (issue 15; `sipguard.state`)."""

    backend: str = "memory"  # memory: this process only | redis: every worker and host
    redis_url: str = "redis://127.0.0.1:6379/0"  # redis://, rediss:// (TLS), unix:///path
    key_prefix: str = "sipguard:"  # every key and channel starts with it
    on_error: str = "local"  # Redis unreachable: "local" state keeps serving | "refuse" (503)


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration, as one value swapped atomically on reload."""

    source: str  # the config file path, as given
    listen: tuple[Listener, ...]
    tls: TlsSettings | None
    upstream: tuple[Upstream, ...]
    auth: AuthSettings
    trunks: tuple[Trunk, ...]
    metrics: MetricsSettings | None = None
    log: LogSettings = field(default_factory=LogSettings)
    limits: Limits = field(default_factory=Limits)
    protection: Protection = field(default_factory=Protection)
    upstream_health: UpstreamHealth = NO_PROBING
    state: StateSettings = field(default_factory=StateSettings)
    admin: AdminSettings | None = None  # None: no admin API (the default)
    # SHA-256 (hex) of the config file's bytes as loaded; "" for settings built by hand.
    source_sha256: str = ""
    identity: IdentitySettings | None = None  # None: plain X-Sipguard-Trunk/User, unsigned
    workers: int = 1  # processes serving this host; 1: no supervisor (sipguard.supervisor)
    # Port of worker 0's upstream-facing UDP sockets (worker i: + i); None: an ephemeral port.
    upstream_source_port: int | None = None
