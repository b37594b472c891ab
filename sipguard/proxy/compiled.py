"""From settings to what the core decides under, once per load (start, SIGHUP).

Owns: `compile_config` (a `Settings` and the shell's upstream-facing sockets -> `Config`: the
parser limits, the source matcher, the credential store, our addresses and the fragments our
Via, Record-Route and Path are written from, naming each listener as `listen[].advertise` says),
`guard_settings` and `trunk_limits` (the parts of the settings the guard and the call limiter
take on a reload).

Never does: I/O, keep state across loads (`context.State` does), decide a message.
"""

from __future__ import annotations

from sipguard.auth.credentials import CredentialStore
from sipguard.auth.nonce import NonceIssuer
from sipguard.identity import InboundFilter, Stamper
from sipguard.policy.guard import GuardSettings
from sipguard.policy.whitelist import RuleSet, SourceMatcher
from sipguard.proxy.actions import Address, Transport
from sipguard.proxy.context import Config
from sipguard.proxy.outgoing import fragments_for, needs_index, route_to_us
from sipguard.settings import Settings, TrunkLimits
from sipguard.sip import ParserLimits


def guard_settings(settings: Settings) -> GuardSettings:
    """The guard's part of `settings` (bans, rate limits, scanners)."""
    protection = settings.protection
    return GuardSettings(
        ban_failures=protection.ban_failures,
        ban_window=protection.ban_window,
        ban_duration=protection.ban_duration,
        never_ban=RuleSet(protection.never_ban).__contains__,
        rate=protection.rate,
        burst=protection.burst,
        scanner_user_agents=tuple(protection.scanner_user_agents),
    )


def trunk_limits(settings: Settings) -> dict[str, TrunkLimits]:
    """Each trunk's limits (calls in progress, call rate), by trunk name."""
    return {trunk.name: trunk.limits for trunk in settings.trunks}


def compile_config(
    settings: Settings,
    issuer: NonceIssuer,
    nonce_key: bytes,
    upstream_sockets: tuple[Address, ...] = (),
) -> Config:
    """Everything a message is decided under, derived from `settings` once per load, and the
    shell's own upstream-facing sockets (`Core.use_upstream_sockets`)."""
    parser_limits = ParserLimits.from_settings(settings.limits)
    upstreams = tuple(Address(Transport(u.transport), u.host, u.port) for u in settings.upstream)
    listeners = tuple(Address(Transport(x.transport), x.host, x.port) for x in settings.listen)
    ours = (*listeners, *upstream_sockets)
    named = {(Transport(x.transport), x.host, x.port): x.named for x in settings.listen}
    fragments = {}
    for x in ours:
        key = (x.transport, x.host, x.port)
        fragments[key] = fragments_for(x, named.get(key, (x.host, x.port)))
    inbound = InboundFilter(settings.identity)
    return Config(
        settings=settings,
        parser_limits=parser_limits,
        matcher=SourceMatcher.from_trunks(settings.trunks),
        store=CredentialStore.build(settings.trunks, settings.auth.realm, secret=nonce_key),
        realm=settings.auth.realm,
        opaque=issuer.opaque(settings.auth.realm),
        refuse_drop=settings.auth.refuse == "drop",
        rate_drop=settings.protection.rate_action == "drop",
        upstreams=upstreams,
        upstream_endpoints=frozenset((u.host, u.port) for u in upstreams),
        listeners=listeners,
        upstream_sockets=upstream_sockets,
        own=frozenset((x.host, x.port) for x in ours) | frozenset(named.values()),
        fragments=fragments,
        stamper=Stamper(settings.identity, settings.trunks),
        inbound=inbound,
        needs_index=needs_index(inbound.alternation),
        route_to_us=route_to_us(fragments.values()),
        plans={},
    )
