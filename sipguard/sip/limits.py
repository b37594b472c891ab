"""Size limits of the SIP codec.

Owns: `ParserLimits`, the named bounds every parse and every stream framer enforces, each with its
default and the reason for it. Never does I/O; never reads configuration files (the settings layer
builds a `ParserLimits` from the operator's values).

RFC 3261 §18.1.1 (UDP datagram size), §21.5.14 (513 Message Too Large), §21.4.12 (414).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_LIMITS", "ParserLimits"]


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Bounds on what the codec accepts. Every violation raises a `ParseError` subclass.

    - `max_message_bytes` (65,535): the largest UDP payload; a bigger message cannot have come in
      one datagram and no SIP element needs more. Larger: `MessageTooLarge` (513). On streams it
      bounds header block + body.
    - `max_headers` (256): real messages carry 10-40 header lines; more is a resource attack
      (SECURITY-CASES 7, 10,000 headers). More: `MessageTooLarge` (513).
    - `max_line_bytes` (8,192): one header line after unfolding; longreq.dat (RFC 4475) needs
      about 1 KB; 100 KB digest parameters are refused here. Longer: `MessageTooLarge` (513).
    - `max_uri_bytes` (1,024): Request-URI and any URI parsed from a header. Longer: `ParseError`
      414 (Request-URI Too Long) for the Request-URI, 400 elsewhere.
    - `max_header_block_bytes` (16,384): streams only; the bytes the framer buffers while
      looking for the empty line. More: `MessageTooLarge` (513), the shell closes.
    - `max_body_bytes` (65,535): streams only; the largest Content-Length the framer waits for.
      More: `MessageTooLarge` (513), the shell closes.
    """

    max_message_bytes: int = 65_535
    max_headers: int = 256
    max_line_bytes: int = 8_192
    max_uri_bytes: int = 1_024
    max_header_block_bytes: int = 16_384
    max_body_bytes: int = 65_535
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


DEFAULT_LIMITS = ParserLimits()
