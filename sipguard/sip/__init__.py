"""The SIP codec: bytes in, values and bytes out (sans-IO).

Owns: parsing one message (`parse_message`), framing streams (`StreamFramer`), typed header
values parsed on demand (`Via`, `SipUri`, `NameAddr`, `CSeq`, `Credentials`), minimal byte edits
of received messages and building replies. Never does I/O, never imports the event loop,
logging, time or randomness; raises only `sipguard.errors.ParseError` (and subclasses) for peer
input. RFC 3261 §7, §18.3, §19.1, §20, §25; RFC 5626 §3.5.1; RFC 4475; RFC 5118.
"""

from __future__ import annotations

from sipguard.sip.digest import Credentials, parse_challenge, parse_credentials
from sipguard.sip.edit import (
    Edits,
    apply_edits,
    build_error_response,
    build_response,
    without_top_via,
)
from sipguard.sip.framing import Frame, KeepAlive, StreamFramer
from sipguard.sip.headers import Header
from sipguard.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipguard.sip.lists import split_list
from sipguard.sip.message import Message, RecoveredHeaders, Request, Response
from sipguard.sip.names import canonical_key
from sipguard.sip.parser import parse_message
from sipguard.sip.recovery import recover_headers
from sipguard.sip.uri import SipUri, parse_uri
from sipguard.sip.values import CSeq, NameAddr, Via

__all__ = [
    "DEFAULT_LIMITS",
    "CSeq",
    "Credentials",
    "Edits",
    "Frame",
    "Header",
    "KeepAlive",
    "Message",
    "NameAddr",
    "ParserLimits",
    "RecoveredHeaders",
    "Request",
    "Response",
    "SipUri",
    "StreamFramer",
    "Via",
    "apply_edits",
    "build_error_response",
    "build_response",
    "canonical_key",
    "parse_challenge",
    "parse_credentials",
    "parse_message",
    "parse_uri",
    "recover_headers",
    "split_list",
    "without_top_via",
]
