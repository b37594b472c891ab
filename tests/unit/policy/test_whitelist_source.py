"""Source normalisation (SECURITY-CASES 29-31): differential tests against `ipaddress`.

`normalise_source` has a fast path for hex-only IPv6 text (one regex match, one %-format) and a
general path for zone ids and embedded dotted quads. Both must accept exactly what the standard
library's strict parser accepts, with the same value, under sipguard's two extra rules: an
IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 address, and a zone id (everything from the
first "%") is dropped.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sipguard.policy.sources import IPV4, IPV6, normalise_source
from sipguard.policy.whitelist import SourceMatcher, parse_rules
from sipguard.settings import Trunk

V4_MAX = (1 << 32) - 1
V6_MAX = (1 << 128) - 1


def oracle(text: str) -> tuple[int, int] | None:
    """What the source is matched as, per the standard library; None if it is not an address."""
    base, percent, _ = text.partition("%")
    try:
        if percent:
            # ipaddress takes a scope id only on IPv6 and refuses an empty one or one with "/"
            # or "%"; sipguard drops whatever follows the first "%" (link-local peers).
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(base)
        else:
            address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:  # RFC 4291 §2.5.5.2
            return IPV4, int(mapped)
        return IPV6, int(address)
    return IPV4, int(address)


def ours(text: str) -> tuple[int, int] | None:
    try:
        return normalise_source(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Generators of valid addresses in many spellings

# Values near the special prefixes, so that the mapped/NAT64/6to4/compatible rules are hit often.
ipv6_values = st.one_of(
    st.integers(0, V6_MAX),
    st.integers(0, V4_MAX),  # IPv4-compatible ::a.b.c.d and ::
    st.integers(0, V4_MAX).map(lambda v: (0xFFFF << 32) | v),  # IPv4-mapped
    st.integers(0, V4_MAX).map(lambda v: (0x0064_FF9B << 96) | v),  # NAT64, RFC 6052
    st.integers(0, (1 << 112) - 1).map(lambda v: (0x2002 << 112) | v),  # 6to4, RFC 3056
    st.integers(0, 0xFFFF).map(lambda v: (0xFE80 << 112) | v),  # link-local
    # sparse: each group zero or not, so that zero runs of every length and place appear
    st.lists(st.sampled_from([0, 0, 1, 0xFFFF, 0x0DB8, 0xABC]), min_size=8, max_size=8).map(
        lambda groups: int("".join(f"{g:04x}" for g in groups), 16)
    ),
)


@st.composite
def ipv6_texts(draw: st.DrawFn) -> str:
    """A valid IPv6 spelling of a random value: any case, leading zeros or not, "::" on any
    run of zero groups (or none), the last 32 bits maybe as a dotted quad, maybe a zone id."""
    value = draw(ipv6_values)
    groups = [(value >> (16 * (7 - i))) & 0xFFFF for i in range(8)]
    dotted = draw(st.booleans())
    count = 6 if dotted else 8
    words: list[str] = []
    for group in groups[:count]:
        digits = f"{group:x}"
        width = draw(st.integers(len(digits), 4))
        word = digits.rjust(width, "0")
        case = draw(st.sampled_from(["lower", "upper", "mixed"]))
        if case == "upper":
            word = word.upper()
        elif case == "mixed":
            word = "".join(c.upper() if draw(st.booleans()) else c for c in word)
        words.append(word)
    if dotted:
        words.append(str(ipaddress.IPv4Address(value & V4_MAX)))
    # "::" may replace any run of zero groups (RFC 4291 §2.2), not only the longest one.
    runs = [
        (start, end)
        for start in range(count)
        for end in range(start + 1, count + 1)
        if all(groups[i] == 0 for i in range(start, end))
    ]
    compress = draw(st.booleans())
    if runs and compress:
        start, end = draw(st.sampled_from(runs))
        text = ":".join(words[:start]) + "::" + ":".join(words[end:])
    else:
        text = ":".join(words)
    if draw(st.integers(0, 4)) == 0:
        text += "%" + draw(st.text(st.sampled_from("eth0.1-_:v"), min_size=1, max_size=8))
    return text


ipv4_texts = st.integers(0, V4_MAX).map(lambda v: str(ipaddress.IPv4Address(v)))
address_texts = st.one_of(
    ipv6_texts(),
    ipv4_texts,
    ipv4_texts.map(lambda ip: f"::ffff:{ip}"),
    ipv4_texts.map(lambda ip: f"::FFFF:{ip}"),
    st.builds(str, st.integers(0, V6_MAX).map(ipaddress.IPv6Address)),
    st.builds(lambda v: ipaddress.IPv6Address(v).exploded, st.integers(0, V6_MAX)),
)


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    """A valid spelling with a few characters inserted, deleted or replaced: mostly invalid,
    close to the edges of the grammar (5 digits, a second "::", 9 groups, "01.2.3.4"...)."""
    text: str = draw(address_texts)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(["0", "1", "f", "F", "g", ":", "::", ".", "%", " ", "\n"]))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert":
            text = text[:position] + piece + text[position:]
        elif action == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position] + piece + text[position + 1 :]
    return text


# Arbitrary text over the characters of addresses, plus a few that parsers must refuse
# (non-ASCII digits int() would accept, "_" int() accepts between digits, whitespace, "x").
noise_texts = st.text(
    st.sampled_from("0123456789abcdefABCDEF:.:::%x_+- \t\n\u0661\uff11/"), max_size=45
)


def _without_foreign_zone(text: str) -> bool:
    """ipaddress refuses scope ids sipguard drops anyway: empty, or with '%' or '/' in them."""
    _, percent, zone = text.partition("%")
    return not percent or (bool(zone) and "%" not in zone and "/" not in zone)


# ---------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=3000, deadline=None)
@given(address_texts)
@example("2001:db8:abc:123::5f")
@example("1:2:3:4:5:6:7::")
@example("::1:2:3:4:5:6:7")
@example("::")
@example("::ffff:203.0.113.5%eth0")
@example("0:0:0:0:0:FFFF:203.0.113.5")
@example("::fFfF:cb00:7105")
def test_valid_sources_agree_with_ipaddress(text: str) -> None:
    expected = oracle(text)
    assert expected is not None, text  # the generator writes valid addresses only
    assert normalise_source(text) == expected, text


@settings(max_examples=3000, deadline=None)
@given(st.one_of(mutated_texts(), noise_texts).filter(_without_foreign_zone))
@example("1:2:3:4:5:6:7::8")
@example("1::2:3:4:5:6:7:8")
@example("::1:2:3:4:5:6:7:8")
@example("1:2:3:4:5:6:7:8::")
@example("1:::2")
@example(":1::2")
@example("1::2:")
@example("1::2::3")
@example("12345::")
@example("::ffff:01.2.3.4")
@example("::ffff:1.2.3.4.5")
@example("1.2.3.4::")
@example("::1.2.3.4:1")
@example("1:2:3:4:5:6:7:1.2.3.4")
@example("1:2:3:4:5:6::1.2.3.4")
@example("::\u0661")
@example("1_0::")
@example(" ::1")
@example("::1\n")
@example("0x1::")
@example("1.2.3.4%eth0")
def test_any_text_agrees_with_ipaddress(text: str) -> None:
    """Valid or not, the same answer as the standard library (both refuse, or same value)."""
    assert ours(text) == oracle(text), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # sipguard drops everything from the first "%" (ipaddress refuses these zone ids)
        ("fe80::1%", "fe80::1"),
        ("fe80::1%a%b", "fe80::1"),
        ("fe80::1%a/b", "fe80::1"),
        ("fe80::1%eth0.100", "fe80::1"),
        ("1:2:3:4:5:6:7:8%a::b", "1:2:3:4:5:6:7:8"),
        ("::ffff:203.0.113.5%", "203.0.113.5"),
        ("::ffff:cb00:7105%eth0", "203.0.113.5"),
        ("64:ff9b::203.0.113.5%eth0", "64:ff9b::cb00:7105"),
    ],
)
def test_zone_id_is_whatever_follows_the_first_percent(text: str, expected: str) -> None:
    assert normalise_source(text) == oracle(expected)


@pytest.mark.parametrize("text", ["1.2.3.4%eth0", "%eth0", "::1\n%eth0", "fe80::g%eth0", "%"])
def test_zone_id_does_not_make_an_address(text: str) -> None:
    with pytest.raises(ValueError):
        normalise_source(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(address_texts, mutated_texts(), noise_texts).filter(_without_foreign_zone))
def test_candidates_follow_normalise_source(text: str) -> None:
    """Cold and cached lookups give the same answer; a non-address matches open trunks only."""
    trunks = [
        Trunk("v4", parse_rules(("0.0.0.0/1",))),
        Trunk("v6", parse_rules(("::/1",))),
        Trunk("open", (), allow_open=True),
    ]
    matcher = SourceMatcher.from_trunks(trunks)
    expected = oracle(text)
    if expected is None:
        names = ["open"]
    else:
        family, value = expected
        covered = value >> 31 == 0 if family == IPV4 else value >> 127 == 0
        names = ([("v4" if family == IPV4 else "v6")] if covered else []) + ["open"]
    for _ in range(2):  # the second answer comes from the cache
        assert [t.name for t in matcher.candidates(text)] == names, text
