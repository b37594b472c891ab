"""Relaying a response through the core (RFC 3261 §16.7 step 3, §18.2.2; issue 13): a response
whose Via values come as one comma list (as SIPp and many UAs echo them) or as lines of their
own is checked by the value below ours alone and leaves with the bytes the header-line editor
(`Edits.remove_top_via`) writes; a forged top Via in a comma list is a stray.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Cause, Forward
from sipguard.proxy.core import Core
from sipguard.settings import Trunk
from sipguard.sip import Edits, Response, build_response, parse_message
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, UPSTREAM, core, forwarded, request
from tests.unit.proxy.playbook import settings as make_settings

SEPARATORS = [", ", ",", " , ", "\t,\t"]
OTHERS = [
    "SIP/2.0/UDP 10.0.0.1:5061;branch=z9hG4bK-1;rport",
    'SIP/2.0/UDP 127.0.0.1:5061;branch=1;rport;x="a, b"',
    "SIP/2.0/TCP Client.Example.com:5061;branch=z9hG4bK-1;received=10.1.1.1;rport=5999",
]


def _relayed(proxy: Core, data: bytes) -> None:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    (action,) = proxy.handle(data, UPSTREAM, LOCAL, None, NOW)
    assert isinstance(action, Forward) and action.cause is Cause.RESPONSE
    assert action.to == CLIENT
    assert action.data == Edits(msg).remove_top_via().build()
    assert b"sgf=" not in action.data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["Via: ", "Via:", "Via:\t", "v: ", "VIA: "]),
    separator=st.sampled_from(SEPARATORS),
    others=st.lists(st.sampled_from(OTHERS), max_size=2),
    one_line=st.booleans(),
)
def test_any_via_layout_is_relayed_as_the_editor_writes(
    name: str, separator: str, others: list[str], one_line: bool
) -> None:
    """Ours on top, the client's below, more values after: on one line or on lines of their
    own, in any spelling (the general path for the compact and other-case names)."""
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    data = build_response(sent, 200, b"OK", to_tag=b"callee-1")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    vias = [line[5:] for line in lines if line.startswith(b"Via: ")]
    vias += [other.encode() for other in others]
    rest = [line for line in lines if not line.startswith(b"Via: ")]
    if one_line:
        via_lines = [name.encode() + separator.encode().join(vias)]
    else:
        via_lines = [name.encode() + value for value in vias]
    _relayed(proxy, b"\r\n".join([rest[0], *via_lines, *rest[1:]]) + b"\r\n\r\n" + body)


def _one_line(data: bytes) -> bytes:
    """The response with its Via lines joined into one comma list (as SIPp echoes them)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    vias = [line[5:] for line in lines if line.startswith(b"Via: ")]
    others = [line for line in lines if not line.startswith(b"Via: ")]
    joined = [others[0], b"Via: " + b", ".join(vias), *others[1:]]
    return b"\r\n".join(joined) + b"\r\n\r\n" + body


def test_response_with_a_comma_list_via_is_relayed_to_the_client() -> None:
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    for data in (build_response(sent, 200, b"OK", to_tag=b"callee-1"),):
        for shape in (data, _one_line(data)):
            msg = parse_message(shape)
            assert isinstance(msg, Response) and msg.matched_span("via") is not None
            _relayed(proxy, shape)


def test_comma_list_with_a_forged_top_via_is_stray() -> None:
    proxy = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
    sent = forwarded(proxy.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)[0])
    data = _one_line(build_response(sent, 200, b"OK", to_tag=b"callee-1"))
    forged = data.replace(b"branch=z9hG4bKsg", b"branch=z9hG4bKsgf", 1)
    (action,) = proxy.handle(forged, UPSTREAM, LOCAL, None, NOW)
    assert action.cause is Cause.STRAY
