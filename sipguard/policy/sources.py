"""Socket peer addresses as the whitelist matches them: (family, integer), on the hot path.

Owns: `normalise_source` (the (family, integer) a peer address is matched as: IPv4-mapped IPv6
becomes IPv4; NAT64, 6to4 and IPv4-compatible stay IPv6; a zone id is dropped,
SECURITY-CASES 29-31), `normalise_source_text` (its text form for logs and keys), and the
address families `IPV4`/`IPV6` the rules use too.

Never does: parse config entries (`policy.whitelist` does, strictly, with netaddr's help), look
at headers, resolve names. Fast by design: one dict lookup per IPv4 octet, one regex match and
one %-format per IPv6 text, no per-group Python work (one parse per new peer address; callers
cache the answer).
"""

from __future__ import annotations

import re

__all__ = ["IPV4", "IPV6", "OCTET_VALUES", "normalise_source", "normalise_source_text"]

IPV4 = 4
IPV6 = 6
_V4_MAX = (1 << 32) - 1

# Source normalisation is on the hot path (one parse per new peer address), so it avoids
# per-group Python work: see normalise_source.
# The decimal octets without leading zeros: one dict lookup both validates and converts (no
# "010", "1_0", " 1", "+1" or non-ASCII digits: those are not keys).
OCTET_VALUES = {str(octet): octet for octet in range(256)}
_GROUP = "([0-9a-fA-F]{1,4}+)"  # 1 to 4 hex digits (RFC 4291 §2.2 form 1), no backtracking


def _nested_groups(count: int) -> str:
    """GROUP(?::GROUP(?::GROUP|)|): 1 to `count` colon-separated groups, captured in order.

    "(?:X|)" rather than "(?:X)?": sre runs an optional group that captures as a general REPEAT,
    which saves all the marks at each step; an empty alternative costs a plain branch (this
    takes ~15% off the parse)."""
    pattern = ""
    for _ in range(count - 1):
        pattern = f"(?::{_GROUP}{pattern}|)"
    return _GROUP + pattern


# Hex-only IPv6 text, the shape inet_ntop writes (RFC 5952) and any other strict RFC 4291 §2.2
# spelling without a dotted quad, then maybe a zone id (RFC 4007 §11: "%" and anything, dropped).
# Without "::": exactly 8 groups. With one "::": up to 7 groups on each side, captured as groups
# 1-7 (left part) and 8-14 (right part); the "at most 7 groups in all" rule is checked on the
# formatted text (see _compressed_text).
_ZONE = r"(?:%.*|)\Z"
_V6_FULL = re.compile(":".join([_GROUP] * 8) + _ZONE, re.DOTALL)
_V6_COMPRESSED = re.compile(
    rf"(?:{_nested_groups(7)}|)::(?:{_nested_groups(7)}|){_ZONE}", re.DOTALL
)
_FULL_TEXT = "%4s" * 8


def _compressed_text(right: int) -> str:
    """The %-template turning the 14 groups of _V6_COMPRESSED into 32 hex digits (spaces for
    leading zeros) when the right part has `right` groups.

    The left part fills its first 7-right slots ("%4s": right-justified in 4 columns); its last
    `right` slots must be empty and print as nothing ("%s"), so a left part that is too long
    (more than 7 groups in all, which leaves "::" standing for no group) makes the text longer
    than 32 characters. "0000" is the zero group "::" always stands for, then the right part."""
    return "%4s" * (7 - right) + "%s" * right + "0000" + "%4s" * right + "%s" * (7 - right)


# Indexed by Match.lastindex (or 0): the last group that took part is the right part's last one
# (8..14), else the right part is empty.
_COMPRESSED_TEXT = tuple(_compressed_text(max(0, last - 7)) for last in range(15))

# ---------------------------------------------------------------------------------------------
# Normalising socket peer addresses (fast, on the hot path)


def normalise_source(ip: str) -> tuple[int, int]:
    """The (family, integer) a socket peer address is matched as.

    IPv4-mapped IPv6 becomes IPv4; NAT64/6to4/IPv4-compatible stay IPv6; a zone id is dropped.
    Raises ValueError for text that is not an IP address."""
    if ":" not in ip:
        return IPV4, _ipv4_value(ip)
    if "." not in ip:
        # The common IPv6 case: hex-only text as inet_ntop writes it (RFC 5952), maybe a zone.
        value = _ipv6_hex_value(ip)
        if value is not None:
            if value >> 32 == 0xFFFF:
                return IPV4, value & _V4_MAX
            return IPV6, value
    return _ipv6_source(ip)


def normalise_source_text(ip: str) -> str:
    """The text a socket peer address is logged and keyed as (bans, rate limits, dialogs): the
    IPv4-mapped form a dual-stack socket writes for an IPv4 peer (`::ffff:192.0.2.1`, RFC 4291
    §2.5.5.2) becomes the IPv4 address, as the firewall sees it; any other text is returned as
    it is. The text counterpart of `normalise_source`, for the dotted form sockets write."""
    if ip[:7] in ("::ffff:", "::FFFF:") and "." in ip:
        return ip[7:]
    return ip


def _ipv4_value(ip: str) -> int:
    parts = ip.split(".")
    if len(parts) == 4:
        try:
            return (
                (OCTET_VALUES[parts[0]] << 24)
                | (OCTET_VALUES[parts[1]] << 16)
                | (OCTET_VALUES[parts[2]] << 8)
                | OCTET_VALUES[parts[3]]
            )
        except KeyError:
            pass
    raise ValueError(f"not an IP address: {ip!r}")


def _ipv6_hex_value(ip: str) -> int | None:
    """The integer of hex-only IPv6 text (no dotted quad; a zone id is dropped); None if it is
    not that.

    One regex match validates and captures every group; one %-format pads them to 4 digits
    (with spaces) and places them, so there is no per-group Python code (RFC 4291 §2.2)."""
    if "::" in ip:
        match = _V6_COMPRESSED.match(ip)
        if match is None:
            return None
        text = _COMPRESSED_TEXT[match.lastindex or 0] % match.groups("")
        if len(text) != 32:  # more than 7 groups beside "::": it would stand for no group
            return None
    else:
        match = _V6_FULL.match(ip)
        if match is None:
            return None
        text = _FULL_TEXT % match.groups()
    return int(text.replace(" ", "0"), 16)


def _ipv6_source(ip: str) -> tuple[int, int]:
    """IPv6 text with a zone id or an embedded dotted quad (or not an address at all)."""
    hex_text = ip.partition("%")[0]
    low = -1
    if "." in hex_text:
        # Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
        if hex_text[:7] in ("::ffff:", "::FFFF:"):
            try:
                return IPV4, _ipv4_value(hex_text[7:])
            except ValueError:
                pass
        # A dotted quad is only allowed as the last 32 bits (RFC 4291 §2.2 form 3).
        head, _, quad = hex_text.rpartition(":")
        try:
            low = _ipv4_value(quad)
        except ValueError:
            raise ValueError(f"not an IP address: {ip!r}") from None
        hex_text = head + ":0:0"
    value = _ipv6_hex_value(hex_text)
    if value is None:
        raise ValueError(f"not an IP address: {ip!r}")
    if low >= 0:
        value = (value & ~_V4_MAX) | low
    if value >> 32 == 0xFFFF:
        return IPV4, value & _V4_MAX
    return IPV6, value
