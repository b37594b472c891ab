"""Tenant identity (issue 16, sans-IO): the headers sipguard attaches to a request it admits,
signed with HMAC-SHA-256, the headers it strips from requests from outside, and the verifier
the platform can run or port.

Owns nothing of its own; re-exports `headers` (names, canonical form, attribute rules),
`stamp` (writing and stripping) and `verify` (checking). Never reads clocks, files or the
environment: `now` and keys are passed in (DESIGN §2).
"""

from __future__ import annotations

from sipguard.identity.headers import (
    AuthMethod,
    HeaderNames,
    attribute_header,
    attribute_name_problem,
    attribute_value_problem,
    canonical,
    key_id_problem,
    prefix_problem,
)
from sipguard.identity.stamp import ALWAYS_STRIPPED, InboundFilter, Stamper
from sipguard.identity.verify import Outcome, verify, verify_message

__all__ = [
    "ALWAYS_STRIPPED",
    "AuthMethod",
    "HeaderNames",
    "InboundFilter",
    "Outcome",
    "Stamper",
    "attribute_header",
    "attribute_name_problem",
    "attribute_value_problem",
    "canonical",
    "key_id_problem",
    "prefix_problem",
    "verify",
    "verify_message",
]
