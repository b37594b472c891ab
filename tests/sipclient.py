"""A small SIP test client that answers Digest challenges with MD5, SHA-256 or SHA-512-256.

SIPp answers MD5 only (DESIGN §5), so tests that need SHA-256 or SHA-512-256, qop=auth, nc and
cnonce use this. Plain blocking sockets: UDP, TCP, and TLS when given an `ssl.SSLContext`.
Only loopback targets are meant (team rule); every wait has a deadline.

It has its own small parser of challenge values and responses on purpose: an independent peer
catches bugs that the proxy's codec would share with itself. The digest math is
`sipguard.auth.digest`, itself pinned by the RFC vectors.

- `answer_challenge(params, method, uri, username, password, ...)`: pure, no sockets; the
  Authorization value for one challenge (RFC 7616 §3.4, RFC 3261 §22.2).
- `SipClient(host, port, transport).request_with_auth("REGISTER", uri, user, password,
  "SHA-256")`: send, take the 401/407, pick the challenge with that algorithm, answer it with a
  new CSeq on the same Call-ID and From tag (RFC 3261 §22.2), return the final response.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sipguard.auth.digest import canonical_algorithm, compute_ha1, compute_response

__all__ = [
    "NoMatchingChallenge",
    "SipClient",
    "SipMessage",
    "answer_challenge",
    "build_request",
    "format_auth_params",
    "parse_auth_params",
    "parse_message",
    "pick_challenge",
]

MAX_MESSAGE = 65535
USER_AGENT = "sipguard-test-client"
# RFC 3261 §7.3.3 compact forms.
COMPACT = {
    "f": "from",
    "t": "to",
    "i": "call-id",
    "v": "via",
    "l": "content-length",
    "m": "contact",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
}
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


# --- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SipMessage:
    """A parsed request or response: the start line, headers in order, the body."""

    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    raw: bytes = field(repr=False)

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        if not self.is_response:
            raise ValueError("not a response")
        return int(self.start_line.split(" ", 2)[1])

    @property
    def reason(self) -> str:
        parts = self.start_line.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    @property
    def method(self) -> str:
        """The request method, or the CSeq method of a response."""
        if self.is_response:
            return self.cseq[1]
        return self.start_line.split(" ", 1)[0]

    @property
    def uri(self) -> str:
        return self.start_line.split(" ")[1]

    def headers_named(self, name: str) -> list[str]:
        wanted = COMPACT.get(name.lower(), name.lower())
        return [v for n, v in self.headers if COMPACT.get(n.lower(), n.lower()) == wanted]

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = (self.header("CSeq") or "").split()
        return int(number), method

    @property
    def branch(self) -> str | None:
        via = self.header("Via") or ""
        for param in via.split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name.lower() == "branch":
                return value
        return None


def parse_message(data: bytes) -> SipMessage:
    """Parse one whole message (header lines folded per RFC 3261 §7.3.1). ValueError if bad."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of headers")
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    start = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError("header line without a colon")
        headers.append((name.strip(), value.strip()))
    message = SipMessage(start, tuple(headers), body, data)
    length = message.header("Content-Length")
    if length is not None:
        message = SipMessage(start, tuple(headers), body[: int(length)], data)
    return message


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def build_request(
    method: str,
    uri: str,
    *,
    transport: str,
    local: tuple[str, int],
    from_uri: str,
    from_tag: str,
    to_uri: str,
    call_id: str,
    cseq: int,
    branch: str,
    to_tag: str | None = None,
    contact: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    max_forwards: int = 70,
) -> bytes:
    """The bytes of one request (RFC 3261 §8.1.1), CRLF line ends, Content-Length always."""
    to = f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {_bracket(local[0])}:{local[1]};branch={branch};rport",
        f"Max-Forwards: {max_forwards}",
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: <{contact}>")
    lines.append(f"User-Agent: {USER_AGENT}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


# --- challenges and answers ------------------------------------------------------------------


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split `Digest realm="a", qop="auth,auth-int", algorithm=MD5` into the scheme and the
    unquoted parameters (names lowercased). RFC 3261 §25.1 quoted-string with `\\` escapes;
    commas inside quotes stay. ValueError on a malformed value or a duplicate parameter."""
    scheme, _, rest = value.strip().partition(" ")
    if not scheme or any(c not in _TOKEN_CHARS for c in scheme):
        raise ValueError("bad auth scheme")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while True:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and rest[i] in _TOKEN_CHARS:
            i += 1
        name = rest[start:i].lower()
        while i < n and rest[i] in " \t":
            i += 1
        if not name or i >= n or rest[i] != "=":
            raise ValueError("parameter without '='")
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string")
                c = rest[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError("backslash at the end of a quoted string")
                    chars.append(rest[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            param_value = "".join(chars)
        else:
            start = i
            while i < n and rest[i] in _TOKEN_CHARS:
                i += 1
            param_value = rest[start:i]
        if name in params:
            raise ValueError(f"duplicate parameter {name}")
        params[name] = param_value
        while i < n and rest[i] in " \t":
            i += 1
        if i < n:
            if rest[i] != ",":
                raise ValueError("expected ','")
            i += 1
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# RFC 7616 §3.4: these are sent as tokens, everything else as quoted-strings.
_UNQUOTED = frozenset({"algorithm", "qop", "nc", "stale", "userhash"})


def format_auth_params(params: Mapping[str, str], scheme: str = "Digest") -> str:
    """`Digest name="value", ...` in the order given; tokens unquoted per RFC 7616 §3.4."""
    parts = [f"{k}={v}" if k in _UNQUOTED else f"{k}={_quote(v)}" for k, v in params.items()]
    return f"{scheme} " + ", ".join(parts)


def answer_challenge(
    challenge_params: Mapping[str, str],
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    *,
    body: bytes = b"",
    qop: str | None = "auto",
) -> str:
    """The Authorization/Proxy-Authorization VALUE answering one Digest challenge.

    `challenge_params` are the unquoted parameters of the challenge (see `parse_auth_params`).
    The algorithm is the challenge's (absent: MD5). `qop="auto"` picks auth when offered, else
    auth-int, else none (RFC 2069 form); pass "auth", "auth-int" or None to force one.
    `cnonce` defaults to 16 random hex digits."""
    algorithm = canonical_algorithm(challenge_params.get("algorithm", "MD5"))
    if algorithm is None:
        raise ValueError("the challenge names an algorithm we do not know")
    realm = challenge_params["realm"]
    nonce = challenge_params["nonce"]
    if qop == "auto":
        offered = [q.strip() for q in challenge_params.get("qop", "").split(",")]
        qop = "auth" if "auth" in offered else "auth-int" if "auth-int" in offered else None
    answer: dict[str, str] = {
        "username": username,
        "realm": realm,
        "nonce": nonce,
        "uri": uri,
    }
    nc_text = cnonce_text = None
    if qop is not None or algorithm.endswith("-sess"):
        cnonce_text = cnonce if cnonce is not None else secrets.token_hex(8)
    if qop is not None:
        nc_text = f"{nc:08x}"
    response = compute_response(
        algorithm,
        compute_ha1(algorithm, username, realm, password),
        method=method,
        uri=uri,
        nonce=nonce,
        nc=nc_text,
        cnonce=cnonce_text,
        qop=qop,
        body=body,
    )
    answer["response"] = response
    answer["algorithm"] = algorithm
    if qop is not None and nc_text is not None and cnonce_text is not None:
        answer |= {"qop": qop, "nc": nc_text, "cnonce": cnonce_text}
    if "opaque" in challenge_params:
        answer["opaque"] = challenge_params["opaque"]
    return format_auth_params(answer)


class NoMatchingChallenge(ValueError):
    """The 401/407 offered no Digest challenge with the wanted algorithm."""

    def __init__(self, response: SipMessage, algorithm: str | None) -> None:
        super().__init__(f"no Digest challenge with algorithm {algorithm}")
        self.response = response


def pick_challenge(response: SipMessage, algorithm: str | None) -> tuple[str, dict[str, str]]:
    """(answer header name, challenge params) for the first Digest challenge of a 401/407 with
    `algorithm` (None: the first one, as most UAs do, RFC 8760 §2.4)."""
    if response.status == 401:
        challenge_header, answer_header = "WWW-Authenticate", "Authorization"
    elif response.status == 407:
        challenge_header, answer_header = "Proxy-Authenticate", "Proxy-Authorization"
    else:
        raise ValueError(f"not a challenge: {response.status}")
    wanted = canonical_algorithm(algorithm) if algorithm is not None else None
    for value in response.headers_named(challenge_header):
        scheme, params = parse_auth_params(value)
        if scheme.lower() != "digest":
            continue
        offered = canonical_algorithm(params.get("algorithm", "MD5"))
        if wanted is None or offered == wanted:
            return answer_header, params
    raise NoMatchingChallenge(response, algorithm)


# --- the client ------------------------------------------------------------------------------


class SipClient:
    """One socket to `host:port` (UDP, TCP or TLS), one Call-ID and From tag per client.

    Each `request` uses the next CSeq, a new branch, and returns the final response (1xx and
    strays skipped); a non-2xx final response to an INVITE is ACKed (RFC 3261 §17.1.1.3)."""

    def __init__(
        self,
        host: str,
        port: int,
        transport: str = "udp",
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 5.0,
        user: str = "test",
    ) -> None:
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError("transport must be udp, tcp or tls")
        if (transport == "tls") != (ssl_context is not None):
            raise ValueError("tls needs an ssl_context, and only tls takes one")
        self.host, self.port, self.transport, self.timeout = host, port, transport, timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        sock = socket.socket(family, kind)
        try:
            sock.settimeout(timeout)
            if transport == "udp":
                sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
                sock.connect((host, port))
            else:
                sock.connect((host, port))
                if ssl_context is not None:
                    sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.local: tuple[str, int] = sock.getsockname()[:2]
        self.call_id = f"{secrets.token_hex(8)}@sipguard-test"
        self.from_tag = secrets.token_hex(4)
        self.user = user
        self.next_cseq = 1
        self.last_request = b""
        self._buffer = b""

    def __enter__(self) -> SipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # low level

    def send(self, data: bytes) -> None:
        self.last_request = data
        if self.transport == "udp":
            self.sock.send(data)
        else:
            self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> SipMessage:
        """The next message from the peer; TimeoutError after `timeout` (default: client's)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if self.transport == "udp":
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            return parse_message(self.sock.recv(MAX_MESSAGE))
        return parse_message(self._read_stream(deadline))

    def _read_stream(self, deadline: float) -> bytes:
        while True:
            # RFC 5626 §3.5.1 keep-alive CRLFs between messages are not messages.
            self._buffer = self._buffer.lstrip(b"\r\n")
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                length = parse_message(self._buffer[: end + 4]).header("Content-Length")
                total = end + 4 + int(length or 0)
                if len(self._buffer) >= total:
                    message, self._buffer = self._buffer[:total], self._buffer[total:]
                    return message
            if len(self._buffer) > MAX_MESSAGE:
                raise ValueError("message larger than 64 KiB")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete message before the deadline")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the peer closed the connection")
            self._buffer += chunk

    def final_response(self, branch: str, timeout: float | None = None) -> SipMessage:
        """The first final response whose top Via branch is `branch`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no final response before the deadline")
            message = self.receive(left)
            if message.is_response and message.branch == branch and message.status >= 200:
                return message

    # transactions

    def request(
        self,
        method: str,
        uri: str,
        *,
        from_uri: str | None = None,
        to_uri: str | None = None,
        call_id: str | None = None,
        cseq: int | None = None,
        branch: str | None = None,
        from_tag: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float | None = None,
    ) -> SipMessage:
        """Send one request and return its final response."""
        if cseq is None:
            cseq = self.next_cseq
        self.next_cseq = cseq + 1
        aor = f"sip:{self.user}@{_bracket(self.host)}"
        from_uri = from_uri or aor
        to_uri = to_uri or (from_uri if method == "REGISTER" else uri)
        branch = branch or f"z9hG4bK{secrets.token_hex(8)}"  # RFC 3261 §8.1.1.7 magic cookie
        call_id = call_id or self.call_id
        from_tag = from_tag or self.from_tag

        def build(method: str, to_tag: str | None = None, body: bytes = b"") -> bytes:
            with_contact = method in ("REGISTER", "INVITE", "SUBSCRIBE")
            return build_request(
                method,
                uri,
                transport=self.transport,
                local=self.local,
                from_uri=from_uri,
                from_tag=from_tag,
                to_uri=to_uri,
                to_tag=to_tag,
                call_id=call_id,
                cseq=cseq,
                branch=branch,
                contact=f"sip:{self.user}@{_bracket(self.local[0])}:{self.local[1]}"
                if with_contact
                else None,
                headers=headers if method != "ACK" else (),
                body=body,
            )

        self.send(build(method, body=body))
        response = self.final_response(branch, timeout)
        if method == "INVITE" and response.status >= 300:
            # RFC 3261 §17.1.1.3: same branch and CSeq number, To with the response's tag.
            self.send(build("ACK", to_tag=_tag(response.header("To") or "")))
        return response

    def request_with_auth(
        self,
        method: str,
        uri: str,
        username: str,
        password: str,
        algorithm: str | None = "SHA-256",
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        cnonce: str | None = None,
        timeout: float | None = None,
        from_uri: str | None = None,
        to_uri: str | None = None,
    ) -> SipMessage:
        """Send, answer a 401/407 with `algorithm` (None: the first challenge), and return the
        final response to the second request (or the first when it was not a challenge).
        Raises NoMatchingChallenge when no challenge has that algorithm."""
        self.user = username
        first = self.request(
            method,
            uri,
            headers=headers,
            body=body,
            timeout=timeout,
            from_uri=from_uri,
            to_uri=to_uri,
        )
        if first.status not in (401, 407):
            return first
        answer_header, params = pick_challenge(first, algorithm)
        value = answer_challenge(params, method, uri, username, password, 1, cnonce, body=body)
        return self.request(
            method,
            uri,
            headers=[*headers, (answer_header, value)],
            body=body,
            timeout=timeout,
            from_uri=from_uri,
            to_uri=to_uri,
        )


def _tag(name_addr: str) -> str | None:
    for param in name_addr.rpartition(">")[2].split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "tag":
            return value
    return None
