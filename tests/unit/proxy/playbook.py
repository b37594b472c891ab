"""Building blocks for playbook tests of the core: settings, requests and digest answers as
bytes, so that each test reads "these bytes from this peer at this time -> these actions"."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sipguard.auth.digest import compute_ha1, compute_response
from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Action, Address, Forward, Reply, Transport
from sipguard.proxy.core import Core
from sipguard.settings import (
    AuthSettings,
    Credential,
    Listener,
    Protection,
    Settings,
    Trunk,
    Upstream,
)
from sipguard.sip import Request, Response, parse_challenge, parse_message

KEY = b"k" * 32
NOW = 1_800_000_000.0
REALM = "sipguard.test"
CLIENT = Address(Transport.UDP, "127.0.0.1", 5061)
STRANGER = Address(Transport.UDP, "127.0.0.2", 5061)
LOCAL = Address(Transport.UDP, "127.0.0.1", 5060)
UPSTREAM = Address(Transport.UDP, "127.0.0.1", 5070)
R_URI = "sip:bot@127.0.0.1:5060"


def alice(**kw: object) -> Credential:
    return Credential("alice", password="s3cret", **kw)  # type: ignore[arg-type]


def settings(
    *trunks: Trunk,
    algorithms: Sequence[str] = ("MD5",),
    refuse: str = "403",
    upstream: Address = UPSTREAM,
    listen: Sequence[Address] = (LOCAL,),
    protection: Protection | None = None,
) -> Settings:
    return Settings(
        source="test.yaml",
        listen=tuple(Listener(a.transport.value, a.host, a.port) for a in listen),
        tls=None,
        upstream=(
            Upstream(
                f"sip:{upstream.host}:{upstream.port};transport={upstream.transport.value}",
                upstream.transport.value,
                upstream.host,
                upstream.port,
            ),
        ),
        auth=AuthSettings(realm=REALM, algorithms=tuple(algorithms), refuse=refuse),
        trunks=trunks,
        protection=protection or Protection(),
    )


def digest_trunk(**kw: object) -> Trunk:
    whitelist = parse_rules(("127.0.0.1",))
    return Trunk("acme", whitelist=whitelist, credentials=(alice(),), **kw)  # type: ignore[arg-type]


def core(s: Settings, key: bytes = KEY) -> Core:
    return Core(s, nonce_key=key, boot_id=b"bootid01", started_at=NOW - 3600)


def request(
    method: str = "REGISTER",
    *,
    uri: str = R_URI,
    call_id: str = "call-1@client",
    cseq: int = 1,
    branch: str = "z9hG4bK-client-1",
    to_tag: str | None = None,
    extra: Sequence[str] = (),
    body: bytes = b"",
    via_host: str = "127.0.0.1:5061",
    max_forwards: int | None = 70,
    cseq_method: str | None = None,
) -> bytes:
    to = "<sip:bot@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host};branch={branch};rport",
        "From: <sip:alice@127.0.0.1>;tag=from-1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@127.0.0.1:5061>",
        *([f"Max-Forwards: {max_forwards}"] if max_forwards is not None else []),
        *extra,
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def challenge(action: Action) -> dict[str, str]:
    assert isinstance(action, Reply), action
    msg = parse_message(action.data)
    assert isinstance(msg, Response)
    name = b"www-authenticate" if msg.status == 401 else b"proxy-authenticate"
    value = msg.get_all(name)[0]
    return parse_challenge(value).params


def challenges(action: Action) -> list[dict[str, str]]:
    assert isinstance(action, Reply)
    msg = parse_message(action.data)
    assert isinstance(msg, Response)
    name = b"www-authenticate" if msg.status == 401 else b"proxy-authenticate"
    return [parse_challenge(msg.headers[i].value).params for i in msg.indices(name)]


def answer(
    params: dict[str, str],
    method: str,
    *,
    username: str = "alice",
    password: str = "s3cret",
    uri: str = R_URI,
    nc: int = 1,
    cnonce: str = "0a4f113b",
    algorithm: str | None = None,
    realm: str | None = None,
    nonce: str | None = None,
) -> str:
    """The Authorization value a correct client sends for this challenge."""
    algorithm = algorithm or params.get("algorithm", "MD5")
    realm = realm or params["realm"]
    nonce = nonce or params["nonce"]
    ha1 = compute_ha1(algorithm, username, realm, password)
    ncs = f"{nc:08x}"
    response = compute_response(
        algorithm, ha1, method=method, uri=uri, nonce=nonce, nc=ncs, cnonce=cnonce, qop="auth"
    )
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={ncs}, '
        f'cnonce="{cnonce}", opaque="{params.get("opaque", "")}"'
    )


def with_auth(data: bytes, header: str, value: str) -> bytes:
    return data.replace(b"Content-Length:", f"{header}: {value}\r\nContent-Length:".encode(), 1)


def only(actions: list[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


def status_of(action: Action) -> int:
    assert isinstance(action, Reply), action
    msg = parse_message(action.data)
    assert isinstance(msg, Response)
    return msg.status


def forwarded(action: Action) -> Request:
    assert isinstance(action, Forward), action
    msg = parse_message(action.data)
    assert isinstance(msg, Request)
    return msg


def expiry(days: float) -> datetime:
    return datetime.fromtimestamp(NOW + days * 86400).astimezone()
