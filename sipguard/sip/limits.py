"""Size limits of the SIP codec.

Owns: `ParserLimits`, the named bounds every parse and every stream framer enforces, and the two
that only the stream framer needs (`max_header_block_bytes`, `max_body_bytes`). The defaults and
the reasons for the operator's bounds (message, headers, line, URI) have one home,
`sipguard.settings.Limits`; they are read from there, and `from_settings` builds the codec's
bounds from the operator's values. Never does I/O; never reads configuration files.

RFC 3261 §18.1.1 (UDP datagram size), §21.5.14 (513 Message Too Large), §21.4.12 (414).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipguard.settings import Limits

__all__ = ["DEFAULT_LIMITS", "ParserLimits"]

_SETTINGS = Limits()  # the defaults of the operator's bounds, with their reasons


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Bounds on what the codec accepts. Every violation raises a `ParseError` subclass.

    - `max_message_bytes` (`Limits.max_message_bytes`): larger: `MessageTooLarge` (513). On
      streams it bounds header block + body.
    - `max_headers` (`Limits.max_headers`): more header lines: `MessageTooLarge` (513)
      (SECURITY-CASES 7, 10,000 headers).
    - `max_line_bytes` (`Limits.max_line_bytes`): one header line after unfolding; longreq.dat
      (RFC 4475) needs about 1 KB. Longer: `MessageTooLarge` (513).
    - `max_uri_bytes` (`Limits.max_uri_bytes`): Request-URI and any URI parsed from a header.
      Longer: `ParseError` 414 (Request-URI Too Long) for the Request-URI, 400 elsewhere.
    - `max_header_block_bytes` (16,384): streams only; the bytes the framer buffers while
      looking for the empty line. More: `MessageTooLarge` (513), the shell closes.
    - `max_body_bytes` (`Limits.max_message_bytes`): streams only; the largest Content-Length
      the framer waits for. More: `MessageTooLarge` (513), the shell closes.
    """

    max_message_bytes: int = _SETTINGS.max_message_bytes
    max_headers: int = _SETTINGS.max_headers
    max_line_bytes: int = _SETTINGS.max_line_bytes
    max_uri_bytes: int = _SETTINGS.max_uri_bytes
    max_header_block_bytes: int = 16_384
    max_body_bytes: int = _SETTINGS.max_message_bytes
    # Derived: the largest header section (start line included) that cannot reach the line,
    # URI or header-count limit, so the parser's fast path need not measure them.
    fast_path_bytes: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_headers",
            "max_line_bytes",
            "max_uri_bytes",
            "max_header_block_bytes",
            "max_body_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ParserLimits.{name} must be positive")
        # a header line is at least 4 bytes (CRLF, a name character, a colon)
        fast = min(self.max_line_bytes, self.max_uri_bytes, 4 * self.max_headers)
        object.__setattr__(self, "fast_path_bytes", fast)

    @classmethod
    def from_settings(cls, limits: Limits) -> ParserLimits:
        """The codec's bounds for the operator's `limits:` (a body may be as large as a message)."""
        return cls(
            max_message_bytes=limits.max_message_bytes,
            max_headers=limits.max_headers,
            max_line_bytes=limits.max_line_bytes,
            max_uri_bytes=limits.max_uri_bytes,
            max_body_bytes=limits.max_message_bytes,
        )


DEFAULT_LIMITS = ParserLimits()
