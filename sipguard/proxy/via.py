"""Our Via and the marks sipguard leaves on a message to find its way back.

Owns: our Via branch (RFC 3261 §16.6 step 8, §16.11) and To-tag, the received/rport parameters
on the sender's Via (RFC 3261 §18.2.1, RFC 3581 §4), checking that a response's top Via is ours
(§16.7 step 3) and where it goes (§18.2.2), the transaction key of an INVITE (§17.2.3), our
Record-Route and Path URIs (RFC 3261 §16.6 step 4, RFC 5658 double record-routing, RFC 3327),
the flow token that lets a request from the upstream reach a client over the connection it
registered or called from, and the destinations named by URIs (RFC 3263 without DNS).

Never does: I/O, clocks, or trust a header to name an address we send to unchecked: broadcast,
multicast and unspecified addresses are refused (SECURITY-CASES 16).

The branch is deterministic and signed: `z9hG4bK` + `sg` + 20 hex digits of
HMAC-SHA-256(key, the previous hop's branch and sent-by, Call-ID [, From tag and CSeq number for
RFC 2543 peers]). A retransmission, the CANCEL of an INVITE and the ACK of a non-2xx final
response all get the INVITE's branch (§16.11), and a response is accepted only when its top Via
carries the branch recomputed from the Via below it: no state, and no forged responses. When
the upstream pool holds the request sent on a response's branch (a client transaction), that
request is the proof instead: the response's top Via must be, byte for byte, the Via we wrote
in it (`is_sent_via`); a Via changed on the way is checked by its MAC as above.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from binascii import hexlify  # the hex digits as bytes, in one call

from sipguard.proxy.actions import Address, Transport
from sipguard.sip import Request, Response
from sipguard.sip.uri import SipUri
from sipguard.sip.values import Via

MAGIC_COOKIE = b"z9hG4bK"  # RFC 3261 §8.1.1.7
BRANCH_PREFIX = MAGIC_COOKIE + b"sg"
BRANCH_DIGEST_HEX = 20  # 80 bits: forging a branch is out of reach, the Via stays short
TAG_PREFIX = b"sg"  # To-tags of the replies sipguard builds (RFC 3261 §8.2.6.2)
FLOW_PARAM = b"sgf"  # URI parameter carrying the client's flow in our Record-Route/Path

# An INVITE transaction as its CANCEL and ACK find it: source IP, top Via branch, Call-ID.
TransactionKey = tuple[str, bytes, bytes]


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
    return BRANCH_PREFIX + hexlify(hmac.digest(key, material, "sha256")[: BRANCH_DIGEST_HEX // 2])


def compute_tag(key: bytes, call_id: bytes, from_tag: bytes | None, branch: bytes | None) -> bytes:
    """A To-tag for a reply we build: the same for a retransmission, so that replies to the same
    request differ in nothing but what the request decides (SECURITY-CASES 26)."""
    material = b"tag\x00%s\x00%s\x00%s" % (call_id, from_tag or b"", branch or b"")
    return TAG_PREFIX + hexlify(hmac.digest(key, material, "sha256")[:8])


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
    """`udp-127.0.0.1-5061`: the socket address a client used, to reach it back (RFC 5626 idea).
    Formatted as text, encoded once (a `Transport` formats as its value)."""
    return f"{address.transport}-{address.host}-{address.port}".encode()


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


def branch(
    key: bytes, prev: Via, call_id: bytes, from_tag: bytes | None, cseq: int, token: bytes
) -> bytes:
    """Our branch for a message whose previous hop's Via is `prev`, sent back along the flow
    `token` (`flow_token`): the bytes our Via carries, so that a response's check reads them
    from it as they are."""
    return compute_branch(key, prev.branch, prev.sent_by + b"\x00" + token, call_id, from_tag, cseq)


def branch_for(key: bytes, msg: Request, source: Address) -> bytes:
    """Our branch for a request received from `source`."""
    return branch_on(key, msg, flow_token(source))


def branch_on(key: bytes, msg: Request, token: bytes) -> bytes:
    """`branch_for` when the caller has the source's `flow_token` already."""
    return branch(key, msg.top_via, msg.call_id, msg.from_.tag, msg.cseq.number, token)


def tag_for(key: bytes, msg: Request) -> bytes:
    """The To-tag of a reply we build to `msg`."""
    return compute_tag(key, msg.call_id, msg.from_.tag, msg.top_via.branch)


def transaction_key(msg: Request, ip: str) -> TransactionKey:
    """INVITE, its CANCEL and its non-2xx ACK share the top Via branch (RFC 3261 §17.2.3)."""
    via = msg.top_via
    return (ip, via.branch or b"%d" % msg.cseq.number, msg.call_id)


def received_params(via: Via, source: Address) -> list[tuple[bytes, bytes | None]]:
    """RFC 3261 §18.2.1 received, RFC 3581 §4 rport, on the sender's Via."""
    params: list[tuple[bytes, bytes | None]] = []
    host = source.host.encode("ascii")
    if via.host != host:
        params.append((b"received", host))
    if via.has_rport:
        if via.host == host:
            params.append((b"received", host))
        params.append((b"rport", b"%d" % source.port))
    return params


def one_via_value(msg: Request) -> bool:
    """Exactly one Via value: one Via header line, no comma in it."""
    if len(msg.indices(b"via")) != 1:
        return False
    value = msg.get(b"via")
    return value is not None and b"," not in value


def single_via(msg: Request) -> bool:
    """A message read on the fast path has exactly one Via value: its top Via line holds no
    comma list and no other Via line follows (a false "no" only costs the general check)."""
    m = msg.fast_match
    if m is None:
        return False
    raw = msg.raw
    end = m.end("via")
    return raw[end : end + 2] == b"\r\n" and raw.find(b"\nVia", end, msg.header_end) < 0


def response_destination(key: bytes, msg: Response, first: bytes | None = None) -> Address | None:
    """Where a response goes (RFC 3261 §16.7 step 3, §18.2.2): the flow recorded in its top Via,
    when that Via is ours, i.e. carries the branch recomputed from the Via below it; else None
    (a stray, a forged or a foreign Via: SECURITY-CASES 34). `first`: the branch recomputed
    must be this one instead (a failover's later attempt carries a branch of its own). Only
    those two Via values are read (`Message.second_via`: on the parser's fast path, which
    validated every Via, the value below ours is parsed alone)."""
    top = msg.top_via
    ours = top.branch
    if ours is None or not ours.startswith(BRANCH_PREFIX):
        return None
    below = msg.second_via
    if below is None:
        return None
    token = top.param(FLOW_PARAM)
    if not token:
        return None
    destination = parse_flow_token(token)
    if destination is None:
        return None
    # the MAC covers the token as we wrote it (`flow_token` of the source): read as it is
    expected = branch(key, below, msg.call_id, msg.from_.tag, msg.cseq.number, token)
    return destination if hmac.compare_digest(expected, first or ours) else None


def is_sent_via(top: Via, sent: bytes) -> bool:
    """`top`, a response's top Via carrying the branch of a request we sent as `sent`, is the
    Via we wrote there, byte for byte (a Via line of its own, as the request writers put ours).
    Then it is ours (RFC 3261 §16.7 step 3) with no MAC to recompute: the branch (80 bits of
    MAC, which no one but us and the hops it went through can know) found the request, and the
    rest of the value, sent-by and flow token included, is what we wrote. A value an upstream
    changed (a filled `rport`, an added `received`: RFC 3581 §4, RFC 3261 §18.2.1) is not:
    `response_destination` checks it as any other."""
    return b"\nVia: " + top.raw + b"\r\n" in sent


def uri_destination(uri: SipUri) -> Address | None:
    """RFC 3263 without DNS: an IP-literal SIP URI's transport, host and port."""
    if not uri.is_sip or not uri.host:
        return None
    name = uri.param(b"transport")
    if uri.scheme == b"sips":
        transport: Transport | None = Transport.TLS
    elif name is None:
        transport = Transport.UDP
    else:
        transport = transport_of(name.decode("latin-1"))
    if transport is None:
        return None
    port = uri.port or default_port(transport)
    return checked_destination(transport, uri.host.decode("latin-1"), port)
