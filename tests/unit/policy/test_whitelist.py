"""Whitelist rules: each accepted format, each refused form, matching (SECURITY-CASES 29-31)."""

from __future__ import annotations

import ipaddress

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.policy.sources import IPV4, IPV6, normalise_source, normalise_source_text
from sipguard.policy.whitelist import Rule, RuleSet, SourceMatcher, parse_rule, parse_rules
from sipguard.settings import Trunk

V4 = int(ipaddress.IPv4Address("203.0.113.5"))


@pytest.mark.parametrize(
    ("text", "family", "first", "last"),
    [
        ("203.0.113.7", IPV4, "203.0.113.7", "203.0.113.7"),
        ("0.0.0.0", IPV4, "0.0.0.0", "0.0.0.0"),
        ("192.168.1.*", IPV4, "192.168.1.0", "192.168.1.255"),
        ("10.*.*.*", IPV4, "10.0.0.0", "10.255.255.255"),
        ("*.*.*.*", IPV4, "0.0.0.0", "255.255.255.255"),
        ("192.168.1.1-10", IPV4, "192.168.1.1", "192.168.1.10"),
        ("192.168.1-2.*", IPV4, "192.168.1.0", "192.168.2.255"),
        ("10.0.0.1-10.0.0.50", IPV4, "10.0.0.1", "10.0.0.50"),
        ("10.0.0.7-10.0.0.7", IPV4, "10.0.0.7", "10.0.0.7"),
        ("198.51.100.0/24", IPV4, "198.51.100.0", "198.51.100.255"),
        ("0.0.0.0/0", IPV4, "0.0.0.0", "255.255.255.255"),
        ("203.0.113.5/32", IPV4, "203.0.113.5", "203.0.113.5"),
        ("2001:db8::1", IPV6, "2001:db8::1", "2001:db8::1"),
        ("2001:DB8::1", IPV6, "2001:db8::1", "2001:db8::1"),
        ("2001:db8::/32", IPV6, "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("::/0", IPV6, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001:db8::1-2001:db8::ff", IPV6, "2001:db8::1", "2001:db8::ff"),
        ("::1", IPV6, "::1", "::1"),
        ("64:ff9b::203.0.113.5", IPV6, "64:ff9b::cb00:7105", "64:ff9b::cb00:7105"),
        ("fe80::1", IPV6, "fe80::1", "fe80::1"),
    ],
)
def test_whitelist_rule_formats(text: str, family: int, first: str, last: str) -> None:
    rule = parse_rule(text)
    assert rule == Rule(
        text, family, int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
    )


REFUSED = [
    ("010.0.0.1", "leading zeros"),
    ("10.0.0.01", "leading zeros"),
    ("0300.0.0.1", "leading zeros"),
    ("10.1", "shorthand"),
    ("10.0.1", "shorthand"),
    ("167772161", "shorthand"),
    ("0x0a.0.0.1", "hexadecimal"),
    ("0x0a000001", "hexadecimal"),
    ("256.0.0.1", "above 255"),
    ("10.0.0.999", "above 255"),
    ("10.0.0.0/33", "/33 is longer than 32"),
    ("2001:db8::/129", "/129 is longer than 128"),
    ("10.0.0.0/08", "without leading zeros"),
    ("10.0.0.0/", "decimal number"),
    ("10.0.0.0/-1", "decimal number"),
    ("10.0.0.0/255.0.0.0", "decimal number"),
    ("10.0.0.1/8", "host bits are set (did you mean 10.0.0.0/8?)"),
    ("2001:db8::1/32", "host bits are set (did you mean 2001:db8::/32?)"),
    ("10.0.0.9-10.0.0.1", "range end is below its start"),
    ("192.168.1.10-1", "range end is below its start"),
    ("2001:db8::9-2001:db8::1", "range end is below its start"),
    ("10.0.0.1-2001:db8::1", "one family"),
    ("2001:db8::1-10.0.0.1", "one family"),
    ("fe80::1%eth0", "zone ids"),
    ("fe80::1%1", "zone ids"),
    (" 10.0.0.1", "whitespace"),
    ("10.0.0.1 ", "whitespace"),
    ("10.0.0.1 - 10.0.0.2", "whitespace"),
    ("10.0.0.0/ 8", "whitespace"),
    ("10.0.0.1\t", "whitespace"),
    ("10.*.0.1", "only be followed by wildcards"),
    ("*.0.0.1", "only be followed by wildcards"),
    ("192.168.*.1-10", "only be followed by wildcards"),
    ("192.168.1-2.3", "only be followed by wildcards"),
    ("10.*", "four octets"),
    ("2001:db8::*", "IPv6 wildcards"),
    ("2001:db8:*:*:*:*:*:*", "IPv6 wildcards"),
    ("::ffff:203.0.113.5", "IPv4-mapped"),
    ("::ffff:cb00:7105", "IPv4-mapped"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::203.0.113.5", "IPv4-compatible"),
    ("::ffff:010.0.0.1", "leading zeros"),
    ("", "empty"),
    ("example.com", "not an IP address"),
    ("localhost", "not an IP address"),
    ("1:2:3:4:5:6:7:8:9", "not an IPv6 address"),
    ("2001:db8::00001", "not an IPv6 address"),
    ("10.0.0.1-", "missing"),
    ("::1-", "start and an end"),
    ("10.0.0.1-10.0.0.2-10.0.0.3", "not an IP address"),
    ("١٠.0.0.1", "not an IP address"),
]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_whitelist_rule_parsing_rejects_ambiguous_forms(text: str, reason: str) -> None:
    """SECURITY-CASES 30: refuse the config rather than guess (CVE-2021-29921)."""
    with pytest.raises(ValueError) as exc:
        parse_rule(text)
    message = str(exc.value)
    assert message.startswith(f"{text!r}: "), message  # the error names the entry
    assert reason in message


def test_non_string_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_rule(80)  # type: ignore[arg-type]


def test_ipv4_mapped_source() -> None:
    """SECURITY-CASES 29: ::ffff:a.b.c.d is the IPv4 address; NAT64, 6to4 and IPv4-compatible
    forms are IPv6 addresses and never match an IPv4 rule (CVE-2026-39409, CVE-2026-40199)."""
    rules = ["203.0.113.5", "203.0.113.*", "203.0.113.0-203.0.113.9", "203.0.113.0/24"]
    for rule in rules:
        matcher = SourceMatcher.from_trunks([Trunk("t", (parse_rule(rule),))])
        ruleset = RuleSet(parse_rules([rule]))
        for source in (
            "203.0.113.5",
            "::ffff:203.0.113.5",
            "::FFFF:203.0.113.5",
            "::ffff:cb00:7105",
            "0:0:0:0:0:ffff:cb00:7105",
        ):
            assert [t.name for t in matcher.candidates(source)] == ["t"], (rule, source)
            assert source in ruleset
        for source in (
            "::203.0.113.5",  # IPv4-compatible, deprecated (RFC 4291 §2.5.5.1)
            "::cb00:7105",
            "64:ff9b::cb00:7105",  # NAT64 well-known prefix (RFC 6052)
            "64:ff9b::203.0.113.5",
            "2002:cb00:7105::",  # 6to4 (RFC 3056)
            "2002:cb00:7105::1",
            "203.0.114.5",
            "::ffff:203.0.114.5",
            "::ffff:cb00:7205",
        ):
            assert matcher.candidates(source) == (), (rule, source)
            assert source not in ruleset
    # Denied exactly as the IPv4 rule says, at the range edges too.
    matcher = SourceMatcher.from_trunks([Trunk("t", parse_rules(("203.0.113.0-203.0.113.9",)))])
    assert matcher.candidates("::ffff:203.0.113.9")
    assert not matcher.candidates("::ffff:203.0.113.10")
    assert not matcher.candidates("::ffff:203.0.112.255")


def test_nat64_prefix_can_be_trusted_explicitly() -> None:
    matcher = SourceMatcher.from_trunks([Trunk("nat64", parse_rules(("64:ff9b::cb00:7100/120",)))])
    assert matcher.candidates("64:ff9b::203.0.113.5")
    assert not matcher.candidates("203.0.113.5")


def test_ipv6_catch_all_does_not_cover_mapped_ipv4_peers() -> None:
    matcher = SourceMatcher.from_trunks([Trunk("v6", parse_rules(("::/0",)))])
    assert matcher.candidates("2001:db8::1")
    assert not matcher.candidates("::ffff:203.0.113.5")


def test_zone_id_of_source_is_stripped() -> None:
    matcher = SourceMatcher.from_trunks([Trunk("ll", parse_rules(("fe80::1",)))])
    assert matcher.candidates("fe80::1%eth0")
    assert matcher.candidates("fe80::1")
    assert not matcher.candidates("fe80::2%eth0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", (IPV4, V4)),
        ("::ffff:203.0.113.5", (IPV4, V4)),
        ("::ffff:cb00:7105", (IPV4, V4)),
        ("::ffff:203.0.113.5%eth0", (IPV4, V4)),
        ("::203.0.113.5", (IPV6, V4)),
        ("64:ff9b::203.0.113.5", (IPV6, int(ipaddress.IPv6Address("64:ff9b::cb00:7105")))),
        ("2001:db8::1", (IPV6, int(ipaddress.IPv6Address("2001:db8::1")))),
        ("::", (IPV6, 0)),
        ("1:2:3:4:5:6:7:8", (IPV6, int(ipaddress.IPv6Address("1:2:3:4:5:6:7:8")))),
        ("1:2:3:4:5:6:1.2.3.4", (IPV6, int(ipaddress.IPv6Address("1:2:3:4:5:6:1.2.3.4")))),
    ],
)
def test_normalise_source(text: str, expected: tuple[int, int]) -> None:
    assert normalise_source(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:192.0.2.1", "192.0.2.1"),
        ("::ffff:c000:201", "::ffff:c000:201"),  # not the form a socket writes: left alone
        ("::192.0.2.1", "::192.0.2.1"),  # IPv4-compatible is IPv6
        ("64:ff9b::192.0.2.1", "64:ff9b::192.0.2.1"),  # NAT64 is IPv6
        ("2001:db8::1", "2001:db8::1"),
        ("192.0.2.1", "192.0.2.1"),
    ],
)
def test_normalise_source_text(text: str, expected: str) -> None:
    """The logged and keyed text agrees with what matching sees (`normalise_source`)."""
    assert normalise_source_text(text) == expected
    if "." in text:
        assert normalise_source(normalise_source_text(text)) == normalise_source(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1::2::3",
        ":::",
        "1:2:3:4:5:6:7:8:9",
        "12345::",
        "::ffff:1.2.3",
        "::ffff:1.2.3.256",
        "1:2:3:4:5:6:7::8",
        "g::1",
        "1.2.3.4 ",
    ],
)
def test_normalise_source_refuses_non_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        normalise_source(text)


def test_candidates_keep_config_order_and_add_open_trunks() -> None:
    trunks = [
        Trunk("a", parse_rules(("10.0.0.0/8",))),
        Trunk("open", (), allow_open=True),
        Trunk("b", parse_rules(("10.1.0.0/16", "2001:db8::/32"))),
        Trunk("c", parse_rules(("10.1.2.3",))),
    ]
    matcher = SourceMatcher.from_trunks(trunks)

    def names(ip: str) -> list[str]:
        return [t.name for t in matcher.candidates(ip)]

    assert names("10.1.2.3") == ["a", "open", "b", "c"]
    assert names("10.1.2.4") == ["a", "open", "b"]
    assert names("10.2.0.0") == ["a", "open"]
    assert names("11.0.0.0") == ["open"]
    assert names("2001:db8::5") == ["open", "b"]
    assert names("not an address") == ["open"]
    # The cache answers the same the second time.
    assert names("10.1.2.3") == ["a", "open", "b", "c"]


def test_parse_rules_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"'10.0.0.1/8': host bits"):
        parse_rules(("10.0.0.0/8", "10.0.0.1/8"))


def test_ruleset_edges() -> None:
    ruleset = RuleSet(parse_rules(["10.0.0.0/30", "10.0.0.4-10.0.0.5", "2001:db8::/127"]))
    assert len(ruleset) == 3 and ruleset
    assert "10.0.0.5" in ruleset and "10.0.0.0" in ruleset
    assert "10.0.0.6" not in ruleset and "9.255.255.255" not in ruleset
    assert "2001:db8::1" in ruleset and "2001:db8::2" not in ruleset
    assert "nonsense" not in ruleset
    assert 5 not in ruleset
    assert not RuleSet([])


# --- property: the compiled matcher agrees with netaddr's IPSet --------------------------------

ipv4_int = st.integers(0, 2**32 - 1)
ipv6_int = st.integers(0, 2**128 - 1)


@st.composite
def rule_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["v4", "v4cidr", "v4range", "v4glob", "v6", "v6cidr", "v6range"]))
    if kind.startswith("v4"):
        value = draw(ipv4_int)
        text = str(ipaddress.IPv4Address(value))
        if kind == "v4cidr":
            prefix = draw(st.integers(0, 32))
            return str(ipaddress.IPv4Network((value, prefix), strict=False))
        if kind == "v4range":
            other = str(ipaddress.IPv4Address(draw(ipv4_int)))
            low, high = sorted([text, other], key=lambda a: int(ipaddress.IPv4Address(a)))
            return f"{low}-{high}"
        if kind == "v4glob":
            octets = text.split(".")
            fixed = draw(st.integers(0, 3))
            return ".".join(octets[:fixed] + ["*"] * (4 - fixed))
        return text
    value = draw(ipv6_int.filter(lambda v: v >> 32 not in (0, 0xFFFF)))
    text = str(ipaddress.IPv6Address(value))
    if kind == "v6cidr":
        prefix = draw(st.integers(0, 96))
        return str(ipaddress.IPv6Network((value, prefix), strict=False))
    if kind == "v6range":
        other6 = draw(ipv6_int.filter(lambda v: v >> 32 not in (0, 0xFFFF)))
        low6, high6 = sorted([value, other6])
        return f"{ipaddress.IPv6Address(low6)}-{ipaddress.IPv6Address(high6)}"
    return text


def _ipset(rules: list[Rule]) -> netaddr.IPSet:
    # One constructor call (never add() one by one: quadratic).
    return netaddr.IPSet(
        cidr
        for rule in rules
        for cidr in netaddr.iprange_to_cidrs(
            netaddr.IPAddress(rule.first, rule.family), netaddr.IPAddress(rule.last, rule.family)
        )
    )


def _near(rules: list[Rule]) -> st.SearchStrategy[str]:
    """Addresses at and around rule edges, plus random ones, in every spelling."""
    edges: list[str] = []
    for rule in rules:
        top = 2**32 - 1 if rule.family == IPV4 else 2**128 - 1
        for value in (rule.first - 1, rule.first, rule.last, rule.last + 1):
            if 0 <= value <= top:
                edges.append(
                    str(
                        ipaddress.ip_address(value)
                        if rule.family == IPV6
                        else ipaddress.IPv4Address(value)
                    )
                )
    plain = st.one_of(
        st.sampled_from(edges) if edges else st.nothing(),
        ipv4_int.map(lambda v: str(ipaddress.IPv4Address(v))),
        ipv6_int.map(lambda v: str(ipaddress.IPv6Address(v))),
    )
    return plain.flatmap(
        lambda ip: st.sampled_from([ip, f"::ffff:{ip}"] if ":" not in ip else [ip])
    )


@settings(max_examples=300, deadline=None)
@given(st.data(), st.lists(rule_texts(), max_size=12), st.lists(rule_texts(), max_size=6))
def test_matcher_agrees_with_netaddr_ipset(
    data: st.DataObject, texts_a: list[str], texts_b: list[str]
) -> None:
    rules_a = [parse_rule(t) for t in texts_a]
    rules_b = [parse_rule(t) for t in texts_b]
    trunk_a, trunk_b = Trunk("a", tuple(rules_a)), Trunk("b", tuple(rules_b))
    matcher = SourceMatcher.from_trunks([trunk_a, trunk_b])
    set_a, set_b = _ipset(rules_a), _ipset(rules_b)
    ruleset_a = RuleSet(rules_a)
    for _ in range(20):
        source = data.draw(_near(rules_a + rules_b))
        family, value = normalise_source(source)
        oracle_address = netaddr.IPAddress(value, family)  # ::ffff:a.b.c.d compared as IPv4
        expected = []
        if not texts_a or oracle_address in set_a:
            expected.append("a")
        if not texts_b or oracle_address in set_b:
            expected.append("b")
        assert [t.name for t in matcher.candidates(source)] == expected, source
        assert (source in ruleset_a) == (oracle_address in set_a)
