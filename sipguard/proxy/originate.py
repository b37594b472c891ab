"""Requests sipguard originates itself toward an upstream: the OPTIONS health probe, the ACK
of a failed INVITE branch and the CANCEL of a branch that rang past Timer C.

Owns: `build_probe` (RFC 3261 §11.1: an OPTIONS with a single Via of ours), `build_ack`
(RFC 3261 §17.1.1.3: the ACK a client transaction sends for a non-2xx final response; the
failed branch of a failover is never relayed, so nobody else would acknowledge it and the
upstream would retransmit its 503 for 32 s) and `build_cancel` (RFC 3261 §9.1, §16.8: the
CANCEL of an INVITE branch as we sent it, when Timer C fires).

Never does: I/O, clocks, decide when to send (probe.Prober and transactions decide).
"""

from __future__ import annotations

from sipguard.proxy.actions import Address
from sipguard.proxy.via import hostport, via_value
from sipguard.sip import Request, Response

PROBE_FROM = b"<sip:sipguard@invalid>"  # RFC 3261 §8.1.1.3; the probe has no user behind it


def probe_target(to: Address) -> bytes:
    """The Request-URI (and To) of a probe: the upstream itself, with its transport."""
    return b"sip:%s;transport=%s" % (hostport(to), to.transport.value.encode("ascii"))


def build_probe(to: Address, local: Address, branch: bytes, cseq: int) -> bytes:
    """An OPTIONS request to the upstream at `to`, its Via naming `local` (RFC 3261 §11.1).
    Call-ID and From tag derive from the branch, which is unique per probe."""
    target = probe_target(to)
    unique = branch[-20:]
    lines = [
        b"OPTIONS %s SIP/2.0" % target,
        b"Via: " + via_value(local, branch),
        b"Max-Forwards: 70",
        b"From: %s;tag=%s" % (PROBE_FROM, unique[:10]),
        b"To: <%s>" % target,
        b"Call-ID: %s@sipguard" % unique,
        b"CSeq: %d OPTIONS" % cseq,
        b"Accept: application/sdp",
        b"Content-Length: 0",
        b"",
        b"",
    ]
    return b"\r\n".join(lines)


def build_ack(invite: Request, response: Response) -> bytes:
    """RFC 3261 §17.1.1.3: the ACK for a non-2xx final `response` to `invite` (the INVITE as we
    sent it): its Request-URI, top Via (ours: the same branch), From, Call-ID, CSeq number and
    Route set; the To of the response (with the upstream's tag)."""
    to = response.get(b"to")
    assert to is not None  # the parser checked it
    return _same_transaction(invite, b"ACK", to)


def build_cancel(invite: Request) -> bytes:
    """RFC 3261 §9.1: the CANCEL of `invite` (the INVITE as we sent it): its Request-URI, top Via
    (ours: the same branch, so that it matches the INVITE's transaction upstream), From, To,
    Call-ID, CSeq number and Route set."""
    to = invite.get(b"to")
    assert to is not None  # the parser checked it
    return _same_transaction(invite, b"CANCEL", to)


def _same_transaction(invite: Request, method: bytes, to: bytes) -> bytes:
    """An ACK or CANCEL of `invite`: what both copy from it (§9.1, §17.1.1.3), with `to`; its
    lines read by key (`Message.get`, `line_values`), no `Header` tuples."""
    via, from_ = invite.get(b"via"), invite.get(b"from")
    assert via is not None and from_ is not None  # the parser checked them
    lines = [
        b"%s %s SIP/2.0" % (method, invite.uri),
        b"Via: " + via.split(b",", 1)[0].strip(),
        b"Max-Forwards: 70",
        b"From: " + from_,
        b"To: " + to,
        b"Call-ID: " + invite.call_id,
        b"CSeq: %d %s" % (invite.cseq.number, method),
    ]
    lines.extend(b"Route: " + value for value in invite.line_values(b"route"))
    lines.extend((b"Content-Length: 0", b"", b""))
    return b"\r\n".join(lines)
