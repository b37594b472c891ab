"""The TLS contexts the settings ask for, built from the files they name.

Owns: `server_context` (the tls:// listeners' context, None without one) and `client_context`
(the context toward TLS upstreams, None without one), with a file that cannot be used turned
into a `ConfigError` naming the config file.

Never does: read a certificate at any other moment than start and reload, put a key or a file's
content into a message.
"""

from __future__ import annotations

import ssl

from sipguard.errors import ConfigError
from sipguard.settings import Settings
from sipguard.transport.streams import server_tls_context
from sipguard.transport.upstream import client_tls_context


def server_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.tls
    if tls is None or not any(x.transport == "tls" for x in settings.listen):
        return None
    try:
        return server_tls_context(
            tls.certificate,
            tls.private_key,
            ca_file=tls.ca_file,
            verify_client=tls.verify_client,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError([f"{settings.source}: tls: {exc}"]) from exc


def client_context(settings: Settings, override: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """`override` when given (tests trust a throw-away CA with it), else the context that
    verifies TLS upstreams (see transport.upstream); None when no upstream is TLS."""
    if override is not None:
        return override
    if not any(u.transport == "tls" for u in settings.upstream):
        return None
    tls = settings.tls
    try:
        return client_tls_context(
            ca_file=tls.ca_file if tls else None,
            certificate=tls.certificate if tls else None,
            private_key=tls.private_key if tls else None,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError([f"{settings.source}: tls: {exc}"]) from exc
