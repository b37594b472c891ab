"""`sipguard verify-identity`: check the signed identity of one SIP request (shell).

Owns: reading the keys from a config file's `identity` section, one message from stdin
(bounded; bare LF line ends accepted, as from a text editor or a log), the clock, and the exit
code: 0 when the signature is valid, 1 with the reason on stderr when not, 78 when the config
cannot be used. The check itself is `sipguard.identity.verify_message`, sans-IO.

Never does: print a key, or anything of the message but the outcome.
"""

from __future__ import annotations

import sys
import time
from typing import BinaryIO

from sipguard.config import load_settings
from sipguard.errors import ConfigError
from sipguard.exits import EX_CONFIG, EX_INVALID, EX_OK
from sipguard.identity import Outcome, verify_message
from sipguard.settings import Limits

# A SIP message never exceeds this (RFC 3261 §18.1.1); read one byte more to tell.
MAX_MESSAGE_BYTES = Limits().max_message_bytes


def verify_identity_command(
    config: str,
    max_age: float | None = None,
    stdin: BinaryIO | None = None,
    now: float | None = None,
) -> int:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EX_CONFIG
    identity = settings.identity
    if identity is None:
        print(f"error: {config}: no identity section: nothing is signed", file=sys.stderr)
        return EX_CONFIG
    source = stdin if stdin is not None else sys.stdin.buffer
    raw = source.read(MAX_MESSAGE_BYTES + 1)
    if len(raw) > MAX_MESSAGE_BYTES:
        print(f"invalid: longer than {MAX_MESSAGE_BYTES} bytes", file=sys.stderr)
        return EX_INVALID
    outcome = verify_message(
        _crlf(raw),
        identity.signing_keys,
        time.time() if now is None else now,
        identity.max_age if max_age is None else max_age,
        prefix=identity.header_prefix,
    )
    if outcome is Outcome.VALID:
        print(outcome.value)
        return EX_OK
    print(f"invalid: {outcome.value}", file=sys.stderr)
    return EX_INVALID


def _crlf(raw: bytes) -> bytes:
    """The message with CRLF line ends, and its header section ended, whatever it was saved
    with (bare LF from an editor; no empty line after the last header)."""
    if b"\r\n" not in raw:
        raw = raw.replace(b"\n", b"\r\n")
    if b"\r\n\r\n" not in raw:
        raw = raw.rstrip(b"\r\n") + b"\r\n\r\n"
    return raw
