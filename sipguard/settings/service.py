"""The settings of the daemon's own services beside SIP, as frozen values: the `/metrics`
endpoint, the admin API's listener and the log.

Owns: `MetricsSettings`, `AdminSettings` (and `MIN_ADMIN_TOKEN_BYTES`), `LogSettings`.
`sipguard.settings` re-exports each, so every layer imports them from there.

Never does: open a listener (`sipguard.admin`, `sipguard.metrics` do), read the token file
(`sipguard.config.admin`), put the token in a repr. Stdlib dataclasses only.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The Prometheus `/metrics` and `/healthz` endpoint."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin API's own listener (issue 17): JSON over HTTP, a bearer token required.

    `host` is a loopback address unless the operator set `allow_remote` (the config loader
    refuses anything else), since the API can lift bans and reload the configuration."""

    host: str
    port: int
    token: bytes = field(repr=False, hash=False)  # from token_file, trailing newline removed
    token_source: str = ""  # e.g. "file:/etc/sipguard/admin.token"; never the token itself
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if len(self.token) < MIN_ADMIN_TOKEN_BYTES:
            raise ValueError(f"admin: the token is shorter than {MIN_ADMIN_TOKEN_BYTES} bytes")


# A bearer token shorter than this can be guessed; `openssl rand -hex 32` writes 64.
MIN_ADMIN_TOKEN_BYTES = 16


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"  # debug | info | warning | error
    format: str = "auto"  # json | console | auto (console on a terminal, json otherwise)
