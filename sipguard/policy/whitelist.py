"""IP whitelist rules: strict parsing, and matching a socket peer address against them.

Owns: the whitelist entry grammar (DESIGN §3: `parse_rule`, which makes the `settings.Rule` the
config holds), and compiling rules into sorted, merged integer intervals per address family that
a socket peer address, normalised by `policy.sources`, is looked up in (DESIGN §4 step 1,
SECURITY-CASES 29-31).

Never does: SIP parsing, logging, I/O, name resolution. It never looks at Via `received`/`rport`,
Contact or any header: callers pass the socket peer address (SECURITY-CASES 31).

Entry formats (anything else is refused, SECURITY-CASES 30; CVE-2021-29921 is what guessing costs):
- one address: `203.0.113.7`, `2001:db8::1`
- an IPv4 wildcard, wildcards only in trailing octets, octet ranges where netaddr's IPGlob
  allows them: `192.168.1.*`, `10.*.*.*`, `192.168.1.1-10`, `192.168.1-2.*`
- a range `A-B` of one family with A <= B: `10.0.0.1-10.0.0.50`
- a CIDR without host bits: `198.51.100.0/24`, `2001:db8::/32`
Refused: leading zeros (`010.0.0.1`, `/08`), shorthand (`10.1`), hex and octal, octets > 255,
`/33`, `/129`, host bits set, reversed or mixed-family ranges, zone ids (`fe80::1%eth0`),
whitespace, a wildcard before a fixed octet (`10.*.0.1`), IPv6 wildcards, and IPv6 rules written
in the IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) or IPv4-compatible (`::a.b.c.d`,
deprecated by RFC 4291 §2.5.5.1) forms: write the IPv4 address instead.

Source normalisation (`policy.sources.normalise_source`, and its text form for logs and keys):
- `::ffff:a.b.c.d` (IPv4-mapped, what a dual-stack socket reports for an IPv4 peer) is the IPv4
  address a.b.c.d and matches IPv4 rules only.
- NAT64 (`64:ff9b::/96`, RFC 6052), 6to4 (`2002::/16`, RFC 3056) and IPv4-compatible (`::a.b.c.d`)
  addresses are IPv6 addresses: they match IPv6 rules only, never the embedded IPv4 address
  (those prefixes can be reached by anyone who controls a translator or relay). An operator who
  trusts a translator writes its IPv6 prefix explicitly, e.g. `64:ff9b::cb00:7100/120`.
- A zone id (`fe80::1%eth0`, link-local peers) is stripped: rules cannot name a zone, so a
  link-local rule matches that address on every interface.
- A wide IPv6 rule such as `::/0` does not cover IPv4 peers reached through a dual-stack socket:
  they are IPv4 and need IPv4 rules.

Matching compiles rules into sorted integer intervals and looks up with `bisect`: netaddr's
IPSet is 5-20x slower per lookup and quadratic to build with `add()` (DESIGN §5).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence

import netaddr

from sipguard.policy.sources import IPV4, IPV6, OCTET_VALUES, normalise_source
from sipguard.settings import Rule, Trunk

__all__ = [
    "Rule",
    "RuleSet",
    "SourceMatcher",
    "parse_address",
    "parse_rule",
    "parse_rules",
]

_CACHE_SIZE = 4096
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)\Z")

# ---------------------------------------------------------------------------------------------
# Parsing config entries (strict)


def parse_rule(text: str) -> Rule:
    """Parse one whitelist entry. Raises ValueError("'ENTRY': what is wrong")."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r}: a whitelist entry must be a string")
    try:
        family, first, last = _parse_rule(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return Rule(text, family, first, last)


def parse_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    """Parse entries (tools, tests); the first bad one raises ValueError naming it. The config
    loader parses entry by entry to report every bad one with its key path."""
    return tuple(parse_rule(text) for text in texts)


def _parse_rule(text: str) -> tuple[int, int, int]:
    if not text:
        raise ValueError("empty entry")
    if any(ch.isspace() for ch in text):
        raise ValueError("whitespace is not allowed inside an entry")
    if "%" in text:
        raise ValueError("zone ids are not allowed (a rule cannot name an interface)")
    if "/" in text:
        return _parse_cidr(text)
    if "*" in text:
        return _parse_glob(text)
    if "-" in text:
        if ":" not in text and text.count(".") <= 3:
            return _parse_glob(text)  # an octet range: 192.168.1.1-10, 192.168.1-2.*
        start, _, end = text.partition("-")
        if not start or not end:
            raise ValueError("a range needs a start and an end: A-B")
        return _parse_range(start, end)
    family, value = parse_address(text)
    return family, value, value


def parse_address(text: str) -> tuple[int, int]:
    """Parse one strictly written IP address of a rule into (family, integer)."""
    if ":" in text:
        return IPV6, _parse_ipv6_rule_address(text)
    return IPV4, _parse_ipv4(text)


def _parse_ipv4(text: str) -> int:
    parts = text.split(".")
    for part in parts:
        if part[:2].lower() == "0x":
            raise ValueError("hexadecimal octets are not allowed")
        if not part.isdecimal() or not part.isascii():
            raise ValueError("not an IP address")
    if len(parts) != 4:
        raise ValueError("an IPv4 address needs four octets (shorthand like 10.1 is ambiguous)")
    for part in parts:
        if len(part) > 1 and part[0] == "0":
            raise ValueError("leading zeros are ambiguous (octal?); write the octet without them")
        if int(part) > 255:
            raise ValueError(f"octet {part} is above 255")
    # Cross-check with netaddr's strict (inet_pton) parser; it agrees on everything above.
    return int(netaddr.IPAddress(text, 4, flags=netaddr.INET_PTON))


def _parse_ipv6_rule_address(text: str) -> int:
    if "*" in text:
        raise ValueError("IPv6 wildcards are not supported; use a CIDR such as 2001:db8::/32")
    if "." in text:
        # The embedded dotted quad obeys the IPv4 rules (no leading zeros...).
        _parse_ipv4(text.rpartition(":")[2])
    try:
        value = int(netaddr.IPAddress(text, 6, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError):
        raise ValueError("not an IPv6 address") from None
    if value >> 32 == 0xFFFF:
        raise ValueError(
            "IPv4-mapped form; write the IPv4 address (IPv4-mapped peers are matched as IPv4)"
        )
    if "." in text and value >> 32 == 0:
        raise ValueError(
            "IPv4-compatible form (deprecated, RFC 4291 §2.5.5.1); write the IPv4 address, "
            "or the IPv6 address in hexadecimal if you really mean it"
        )
    return value


def _parse_cidr(text: str) -> tuple[int, int, int]:
    address, _, prefix = text.partition("/")
    family, value = parse_address(address)
    if not _DECIMAL.match(prefix) or not prefix.isascii():
        raise ValueError("the prefix length must be a decimal number without leading zeros")
    bits = 32 if family == IPV4 else 128
    length = int(prefix)
    if length > bits:
        raise ValueError(f"prefix /{length} is longer than {bits} bits")
    host_mask = (1 << (bits - length)) - 1
    if value & host_mask:
        network = netaddr.IPAddress(value & ~host_mask, family)
        raise ValueError(f"host bits are set (did you mean {network}/{length}?)")
    return family, value, value | host_mask


def _parse_range(start: str, end: str) -> tuple[int, int, int]:
    start_family, first = parse_address(start)
    end_family, last = parse_address(end)
    if start_family != end_family:
        raise ValueError("a range must be of one family (both IPv4 or both IPv6)")
    if last < first:
        raise ValueError("range end is below its start")
    return start_family, first, last


def _parse_glob(text: str) -> tuple[int, int, int]:
    if ":" in text:
        raise ValueError("IPv6 wildcards are not supported; use a CIDR such as 2001:db8::/32")
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError("a wildcard needs four octets, e.g. 192.168.1.*")
    variable = False
    for part in parts:
        if part == "*":
            variable = True
            continue
        if variable:
            raise ValueError("a wildcard or octet range may only be followed by wildcards")
        low, dash, high = part.partition("-")
        for octet in (low, high) if dash else (low,):
            if not octet:
                raise ValueError("an octet or a range bound is missing")
            if octet not in OCTET_VALUES:
                _parse_ipv4(f"{octet}.0.0.0")  # raises with the precise reason
                raise ValueError(f"{octet!r} is not an octet")  # pragma: no cover - defensive
        if dash:
            if int(high) < int(low):
                raise ValueError("range end is below its start")
            variable = True
    try:
        glob = netaddr.IPGlob(text)
    except (netaddr.AddrFormatError, ValueError):
        raise ValueError("not a wildcard netaddr's IPGlob accepts") from None
    return IPV4, int(glob.first), int(glob.last)


# ---------------------------------------------------------------------------------------------
# Compiled matching


def _merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or adjacent inclusive intervals."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


class _Intervals:
    """Disjoint sorted intervals of one family, looked up with bisect."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, intervals: Iterable[tuple[int, int]]) -> None:
        merged = _merge(intervals)
        self._starts = [first for first, _ in merged]
        self._ends = [last for _, last in merged]

    def __contains__(self, value: int) -> bool:
        index = bisect_right(self._starts, value) - 1
        return index >= 0 and value <= self._ends[index]

    def __len__(self) -> int:
        return len(self._starts)


class RuleSet:
    """A set of whitelist rules (one trunk's, or protection.never_ban) for membership tests."""

    __slots__ = ("_v4", "_v6", "rules")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._v4 = _Intervals((r.first, r.last) for r in self.rules if r.family == IPV4)
        self._v6 = _Intervals((r.first, r.last) for r in self.rules if r.family == IPV6)

    def contains(self, family: int, value: int) -> bool:
        return value in (self._v4 if family == IPV4 else self._v6)

    def __contains__(self, ip: object) -> bool:
        """Whether a socket peer address (str) is covered; False for anything not an address."""
        if not isinstance(ip, str):
            return False
        try:
            family, value = normalise_source(ip)
        except ValueError:
            return False
        return self.contains(family, value)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __len__(self) -> int:
        return len(self.rules)


class _SegmentTable:
    """Elementary segments of one family, each mapped to the tuple of trunks that cover it.

    Built by a sweep over the per-trunk merged intervals; a lookup is one bisect."""

    __slots__ = ("_starts", "_values", "default")

    def __init__(
        self,
        per_trunk: Sequence[list[tuple[int, int]]],
        trunks: Sequence[Trunk],
        open_mask: Sequence[bool],
    ) -> None:
        # Events: at `position` trunk `index` becomes covered (+1) or uncovered (-1).
        events: list[tuple[int, int, int]] = []
        for index, intervals in enumerate(per_trunk):
            for first, last in intervals:
                events.append((first, 1, index))
                events.append((last + 1, -1, index))
        events.sort()
        interned: dict[tuple[bool, ...], tuple[Trunk, ...]] = {}
        covered = list(open_mask)

        def current() -> tuple[Trunk, ...]:
            key = tuple(covered)
            found = interned.get(key)
            if found is None:
                found = tuple(t for t, on in zip(trunks, key, strict=True) if on)
                interned[key] = found
            return found

        self.default = current()
        starts: list[int] = []
        values: list[tuple[Trunk, ...]] = []
        position = 0
        count = len(events)
        while position < count:
            at = events[position][0]
            while position < count and events[position][0] == at:
                _, delta, index = events[position]
                # Per-trunk intervals are merged, so a trunk is entered and left once per point.
                covered[index] = delta > 0 or open_mask[index]
                position += 1
            value = current()
            if values and values[-1] is value:
                continue
            if not values and value is self.default:
                continue
            starts.append(at)
            values.append(value)
        self._starts = starts
        self._values = values

    def lookup(self, value: int) -> tuple[Trunk, ...]:
        index = bisect_right(self._starts, value) - 1
        return self._values[index] if index >= 0 else self.default


class SourceMatcher:
    """Candidate trunks for a socket peer address (DESIGN §4 step 1)."""

    __slots__ = ("_cache", "_v4", "_v6", "trunks")

    def __init__(self, trunks: Sequence[Trunk], rules: Sequence[Sequence[Rule]]) -> None:
        self.trunks = tuple(trunks)
        # Recent peer address text -> answer. Real traffic comes from few addresses; the cap
        # (cleared when reached: amortised O(1)) keeps a spoofed-source flood from growing it.
        self._cache: dict[str, tuple[Trunk, ...]] = {}
        open_mask = [not trunk_rules for trunk_rules in rules]
        v4 = [_merge((r.first, r.last) for r in rs if r.family == IPV4) for rs in rules]
        v6 = [_merge((r.first, r.last) for r in rs if r.family == IPV6) for rs in rules]
        self._v4 = _SegmentTable(v4, self.trunks, open_mask)
        self._v6 = _SegmentTable(v6, self.trunks, open_mask)

    @classmethod
    def from_trunks(cls, trunks: Sequence[Trunk]) -> SourceMatcher:
        """Compile every trunk's whitelist (parsed rules, `Trunk.whitelist`)."""
        return cls(trunks, [trunk.whitelist for trunk in trunks])

    def candidates(self, ip: str) -> tuple[Trunk, ...]:
        """The trunks (in config order) whose whitelist contains `ip` or is empty.

        `ip` is the socket peer address; text that is not an address matches only open trunks
        (there is no such socket peer, but the core must not raise on it)."""
        found = self._cache.get(ip)
        if found is not None:
            return found
        try:
            family, value = normalise_source(ip)
        except ValueError:
            return self._v4.default
        found = (self._v4 if family == IPV4 else self._v6).lookup(value)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[ip] = found
        return found
