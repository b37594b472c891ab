"""The replies sipguard builds from the parser's match against `sip.build_response`.

`replies.head` writes the lines a response copies from its request (Via, From, To with our tag,
Call-ID, CSeq) from the parser's match when the request was read on the fast path with one Via
value, and through `build_response` otherwise; a challenge splices its nonce into lines prepared
from the config (`admission._challenge_lines`). Both must give the bytes `build_response` gives
with the same extra headers (`build_challenges` for a challenge), for every request of the
corpora and for generated requests of both paths.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.auth.digest import build_challenges
from sipguard.errors import ParseError
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Cause, Info
from sipguard.proxy.admission import _challenge_lines
from sipguard.proxy.context import Context
from sipguard.proxy.replies import TRAILER, head, reply
from sipguard.proxy.via import single_via, tag_for
from sipguard.settings import Trunk
from sipguard.sip import Request, build_response, parse_message
from tests.conftest import CORPORA
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, REALM, core
from tests.unit.proxy.playbook import settings as make_settings

CORE = core(make_settings(Trunk("office", whitelist=parse_rules(("127.0.0.1",)))))
NONCE = b"AAAAAZMxYdQBAgMEBQYHCEl2J2qXk1f0uQ9v5cX1b2Mk"[:43]
EXTRAS = [(), ((b"Retry-After", b"5"),), ((b"Unsupported", b"foo, bar"), (b"X-A", b"b"))]
CHALLENGES = [(("MD5",), False), (("SHA-256", "MD5"), True), (("SHA-512-256-sess",), False)]


def compare(data: bytes) -> tuple[int, int]:
    """Old and new bytes of every reply to `data`; (replies compared, of them on the fast path)."""
    try:
        msg = parse_message(data, CORE.parser_limits)
    except ParseError:
        return 0, 0
    if not isinstance(msg, Request):
        return 0, 0
    cfg, st = CORE._config, CORE._state
    ctx = Context(cfg, st, msg, CLIENT, LOCAL, None, NOW, CLIENT.host, False)
    try:
        tag = tag_for(st.branch_key, msg)
        expected = build_response(msg, 403, b"Forbidden", to_tag=tag)
    except (ParseError, ValueError):
        return 0, 0  # the reference refuses it (a malformed header read on demand)
    assert head(ctx, 403, b"Forbidden") + TRAILER == expected, data
    for extra in EXTRAS:
        new = reply(ctx, 503, b"Service Unavailable", Cause.RATE_LIMITED, Info(), extra).data
        old = build_response(msg, 503, b"Service Unavailable", to_tag=tag, extra_headers=extra)
        assert new == old, (data, extra)
    for algorithms, stale in CHALLENGES:
        register = msg.method == b"REGISTER"
        status, reason, name = (
            (401, b"Unauthorized", b"WWW-Authenticate")
            if register
            else (407, b"Proxy Authentication Required", b"Proxy-Authenticate")
        )
        values = build_challenges(cfg.realm, NONCE.decode(), cfg.opaque, algorithms, stale)
        old = build_response(
            msg, status, reason, to_tag=tag, extra_headers=[(name, v) for v in values]
        )
        lines = _challenge_lines(cfg.realm, cfg.opaque, algorithms, stale, register)
        assert head(ctx, status, reason) + NONCE.join(lines) == old, (data, algorithms)
    return 1, int(single_via(msg))


def _corpus() -> list[bytes]:
    folders = [Path(CORPORA, "rfc4475"), Path(CORPORA, "rfc5118", "wire")]
    return [f.read_bytes() for folder in folders for f in sorted(folder.glob("*.dat"))]


def test_corpora_replies_agree() -> None:
    compared = [compare(data) for data in _corpus()]
    assert sum(c for c, _ in compared) > 20
    assert sum(f for _, f in compared) >= 1  # most torture messages take the general path


def test_playbook_replies_agree() -> None:
    from tests.unit.proxy.playbook import request

    for method in ("INVITE", "REGISTER", "OPTIONS", "BYE", "SUBSCRIBE", "MESSAGE"):
        assert compare(request(method)) == (1, 1)
        assert compare(request(method, to_tag="t-1", max_forwards=None)) == (1, 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["INVITE", "REGISTER", "BYE", "OPTIONS", "SUBSCRIBE"]),
    via=st.sampled_from(
        [
            "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport",
            "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1",
            "SIP/2.0/TCP client.example.com:5061;branch=z9hG4bK-1;received=10.1.1.1;rport=5999",
            "SIP/2.0/UDP [::1]:5062;branch=z9hG4bK-1",
            "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-2",
            "SIP/2.0/UDP 127.0.0.1:5061 ; branch=z9hG4bK-1 ;rport",
        ]
    ),
    from_=st.sampled_from(
        [
            "<sip:alice@127.0.0.1>;tag=f-1",
            '"Alice \\"A\\"" <sip:alice@127.0.0.1>;tag=f-1;x=y',
            "Alice <sip:alice@127.0.0.1> ;tag=f-1",
            "sip:alice@127.0.0.1;tag=f-1",
        ]
    ),
    to=st.sampled_from(
        ["<sip:bot@127.0.0.1>", "Bot <sip:bot@127.0.0.1>;tag=t-1", "<sip:bot@127.0.0.1>;x=1"]
    ),
    cseq=st.sampled_from(["1 {}", "007 {}", "42\t {}"]),
    extra=st.lists(
        st.sampled_from(
            ["Max-Forwards: 70", "Via: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-3", "User-Agent: x"]
        ),
        max_size=2,
    ),
)
def test_generated_replies_agree(
    method: str, via: str, from_: str, to: str, cseq: str, extra: list[str]
) -> None:
    lines = [
        f"{method} sip:bot@127.0.0.1:5060 SIP/2.0",
        f"Via: {via}",
        f"From: {from_}",
        f"To: {to}",
        "Call-ID: c-1@client",
        "CSeq: " + cseq.format(method),
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    compare("\r\n".join(lines).encode())


def test_challenge_template_matches_build_challenge() -> None:
    for algorithms, stale in CHALLENGES:
        for register in (True, False):
            lines = _challenge_lines(REALM, "0paque", algorithms, stale, register)
            values = build_challenges(REALM, NONCE.decode(), "0paque", algorithms, stale)
            name = b"WWW-Authenticate: " if register else b"Proxy-Authenticate: "
            expected = b"".join(name + v + b"\r\n" for v in values) + TRAILER
            assert NONCE.join(lines) == expected
