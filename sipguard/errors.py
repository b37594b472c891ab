"""The exception tree of sipguard.

Owns: the error types every layer raises. Never imports anything else of the package.

Peer errors inside the core are turned into replies (`SipError` carries the status and reason to
answer with); `ConfigError` carries every problem found in a configuration file.
"""

from __future__ import annotations


class SipguardError(Exception):
    """Base of every error sipguard raises on purpose."""


class ConfigError(SipguardError):
    """A configuration file is unusable. `problems` holds one line per problem:
    `FILE: key.path: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SipError(SipguardError):
    """A SIP request that must be refused with `status` and `reason` (RFC 3261 §21)."""

    status: int = 500
    reason: str = "Server Internal Error"

    def __init__(
        self, detail: str, *, status: int | None = None, reason: str | None = None
    ) -> None:
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        self.detail = detail
        super().__init__(detail)


class ParseError(SipError):
    """The bytes are not a SIP message we accept (RFC 3261 §25 grammar, §18.3 framing).

    `routable` tells whether the headers needed to build a response (Via, From, To, Call-ID,
    CSeq) were recovered, so that a `400` can still be sent; `headers` holds their raw values
    when they were (the codec fills it)."""

    status = 400
    reason = "Bad Request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        routable: bool = False,
        headers: object | None = None,
    ) -> None:
        super().__init__(detail, status=status, reason=reason)
        self.routable = routable
        self.headers = headers


class MessageTooLarge(ParseError):
    """RFC 3261 §21.5.14: the message exceeds a size limit."""

    status = 513
    reason = "Message Too Large"


class VersionNotSupported(ParseError):
    """RFC 3261 §21.5.11: the SIP version is not SIP/2.0."""

    status = 505
    reason = "Version Not Supported"
