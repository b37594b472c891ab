"""Where a message goes, and the marks sipguard leaves on it to find its way back.

Owns: our Via branch (RFC 3261 §16.6 step 8, §16.11), our Record-Route and Path URIs
(RFC 3261 §16.6 step 4, RFC 5658 double record-routing, RFC 3327), the flow token that lets a
request from the upstream reach a client over the connection it registered or called from, and
the destination of a response from its Via (RFC 3261 §18.2.2, RFC 3581).

Never does: I/O, clocks, or trust a header to name an address we send to unchecked: broadcast,
multicast and unspecified addresses are refused (SECURITY-CASES 16).

The branch is deterministic and signed: `z9hG4bK` + `sg` + 20 hex digits of
HMAC-SHA-256(key, the previous hop's branch and sent-by, Call-ID [, From tag and CSeq number for
RFC 2543 peers]). A retransmission, the CANCEL of an INVITE and the ACK of a non-2xx final
response all get the INVITE's branch (§16.11), and a response is accepted only when its top Via
carries the branch recomputed from the Via below it: no state, and no forged responses.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from sipguard.proxy.actions import Address, Transport

MAGIC_COOKIE = b"z9hG4bK"  # RFC 3261 §8.1.1.7
BRANCH_PREFIX = MAGIC_COOKIE + b"sg"
BRANCH_DIGEST_HEX = 20  # 80 bits: forging a branch is out of reach, the Via stays short
TAG_PREFIX = b"sg"  # To-tags of the replies sipguard builds (RFC 3261 §8.2.6.2)
FLOW_PARAM = b"sgf"  # URI parameter carrying the client's flow in our Record-Route/Path


def branch_key(secret: bytes) -> bytes:
    """A key for branches and tags derived from the nonce key, so one secret serves both and
    every instance sharing it recognises the others' branches."""
    return hmac.new(secret, b"sipguard branch key v1", hashlib.sha256).digest()


def compute_branch(
    key: bytes,
    prev_branch: bytes | None,
    prev_sent_by: bytes,
    call_id: bytes,
    from_tag: bytes | None,
    cseq_number: int,
) -> bytes:
    """Our branch for a request whose previous hop's Via has `prev_branch` and `prev_sent_by`."""
    if prev_branch is not None and prev_branch.startswith(MAGIC_COOKIE) and len(prev_branch) > 7:
        material = b"3261\x00" + prev_branch + b"\x00" + prev_sent_by + b"\x00" + call_id
    else:
        # RFC 2543 peers: no unique branch, so the transaction is what identifies it (§17.2.3).
        material = b"2543\x00%s\x00%s\x00%s\x00%d" % (
            prev_sent_by,
            call_id,
            from_tag or b"",
            cseq_number,
        )
    # hmac.digest: the one-shot C path, a third of the cost of an HMAC object
    digest = hmac.digest(key, material, "sha256")[: BRANCH_DIGEST_HEX // 2].hex()
    return BRANCH_PREFIX + digest.encode("ascii")


def compute_tag(key: bytes, call_id: bytes, from_tag: bytes | None, branch: bytes | None) -> bytes:
    """A To-tag for a reply we build: the same for a retransmission, so that replies to the same
    request differ in nothing but what the request decides (SECURITY-CASES 26)."""
    material = b"tag\x00%s\x00%s\x00%s" % (call_id, from_tag or b"", branch or b"")
    return TAG_PREFIX + hmac.digest(key, material, "sha256")[:8].hex().encode("ascii")


def is_our_tag(tag: bytes | None) -> bool:
    return tag is not None and tag.startswith(TAG_PREFIX) and len(tag) == len(TAG_PREFIX) + 16


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def hostport(address: Address) -> bytes:
    return f"{bracket(address.host)}:{address.port}".encode("ascii")


def via_value(local: Address, branch: bytes) -> bytes:
    """Our Via (RFC 3261 §16.6 step 8); rport asks a UDP upstream to answer our source port."""
    transport = local.transport.value.upper().encode("ascii")
    rport = b";rport" if local.transport is Transport.UDP else b""
    return b"SIP/2.0/%s %s;branch=%s%s" % (transport, hostport(local), branch, rport)


def flow_token(address: Address) -> bytes:
    """`udp-127.0.0.1-5061`: the socket address a client used, to reach it back (RFC 5626 idea)."""
    return f"{address.transport.value}-{address.host}-{address.port}".encode("ascii")


# Tokens and addresses already checked: every response and in-dialog request checks the same
# few, and ipaddress costs ~10 µs a time. Keys come from peers, so the caches are bounded
# (cleared when full); the values are immutable.
_CACHE_SIZE = 4096
_TOKENS: dict[bytes, Address | None] = {}
_DESTINATIONS: dict[tuple[Transport, str, int], Address | None] = {}


def parse_flow_token(token: bytes) -> Address | None:
    try:
        return _TOKENS[token]
    except KeyError:
        pass
    try:
        transport, host, port = token.decode("ascii").split("-")
        address = checked_destination(Transport(transport), host, int(port))
    except ValueError:
        address = None
    if len(_TOKENS) >= _CACHE_SIZE:
        _TOKENS.clear()
    _TOKENS[token] = address
    return address


def our_uri(local: Address, flow: Address | None) -> bytes:
    """A Record-Route or Path URI naming the listener `local` (loose routing, RFC 3261 §16.6)."""
    params = b";transport=%s;lr" % local.transport.value.encode("ascii")
    if flow is not None:
        params += b";%s=%s" % (FLOW_PARAM, flow_token(flow))
    return b"<sip:%s%s>" % (hostport(local), params)


def checked_destination(transport: Transport, host: str, port: int) -> Address | None:
    """An address we may send to, or None: never broadcast, multicast, unspecified, or port 0."""
    key = (transport, host, port)
    try:
        return _DESTINATIONS[key]
    except KeyError:
        pass
    address = _checked_destination(transport, host, port)
    if len(_DESTINATIONS) >= _CACHE_SIZE:
        _DESTINATIONS.clear()
    _DESTINATIONS[key] = address
    return address


def _checked_destination(transport: Transport, host: str, port: int) -> Address | None:
    if not 0 < port < 65536:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_multicast or ip.is_unspecified:
        return None
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return None
        mapped = ip.ipv4_mapped
        if mapped is not None and (mapped.is_multicast or mapped.is_unspecified):
            return None
    return Address(transport, str(ip), port)


def transport_of(via_transport: str) -> Transport | None:
    """The transport named in a Via sent-protocol (RFC 3261 §20.42); unknown ones are None."""
    try:
        return Transport(via_transport.lower())
    except ValueError:
        return None


def default_port(transport: Transport) -> int:
    return 5061 if transport is Transport.TLS else 5060  # RFC 3261 §19.1.2
