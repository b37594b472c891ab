"""The `admin` section (issue 17): the admin API's listener and its bearer token.

Owns: `admin.listen` (`address:port`, an IP literal), `admin.token_file` (required: the API can
lift bans and reload, so it never runs without a token; at least `MIN_ADMIN_TOKEN_BYTES`,
printable ASCII since it travels in an HTTP header; `secrets.read_file` warns when the file is
open to others) and
`admin.allow_remote`: the listener binds outside loopback only when this is `true`.

Never does: open the listener (`sipguard.admin.api` does), put the token in a message.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from sipguard.config.reader import Reader
from sipguard.config.secrets import read_file
from sipguard.settings import MIN_ADMIN_TOKEN_BYTES, AdminSettings

ADMIN_KEYS = ("listen", "token_file", "allow_remote")
_HOSTPORT = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]:/]*)):(?P<port>[^:]*)\Z")
_TOKEN = re.compile(rb"[\x21-\x7e]+\Z")  # visible ASCII: an HTTP header value without spaces


def read_admin(r: Reader, value: object, done: Mapping[str, Any]) -> AdminSettings | None:
    """`admin`: optional; absent means no admin API."""
    if value is None:
        return None
    section = r.mapping(value, "admin", ADMIN_KEYS)
    if section is None:
        return None
    allow_remote = r.boolean(section.get("allow_remote", False), "admin.allow_remote")
    address = _listen(r, section, bool(allow_remote))
    token, source = _token(r, section)
    if address is None or token is None or allow_remote is None:
        return None
    metrics = done.get("metrics")
    if metrics is not None and (metrics.host, metrics.port) == address:
        r.error("admin.listen", "is metrics.listen too: give the admin API its own port")
        return None
    return AdminSettings(address[0], address[1], token, source, allow_remote)


def _listen(r: Reader, section: dict[str, Any], allow_remote: bool) -> tuple[str, int] | None:
    if "listen" not in section:
        r.error("admin.listen", "missing: give address:port, e.g. 127.0.0.1:9461")
        return None
    text = r.string(section["listen"], "admin.listen")
    if text is None:
        return None
    match = _HOSTPORT.match(text)
    if match is None:
        r.error("admin.listen", f"{text!r}: expected address:port, e.g. 127.0.0.1:9461")
        return None
    host = r.ip_literal(match["v6"], match["host"], "admin.listen", text)
    port = r.port(match["port"], "admin.listen", text)
    if host is None or port is None:
        return None
    if not allow_remote and not ipaddress.ip_address(host).is_loopback:
        r.error(
            "admin.listen",
            f"{text!r} is not a loopback address: the admin API can lift bans and reload, so "
            "it listens outside loopback only with admin.allow_remote: true (firewall it)",
        )
        return None
    return host, port


def _token(r: Reader, section: dict[str, Any]) -> tuple[bytes | None, str]:
    if "token_file" not in section:
        r.error(
            "admin.token_file",
            "missing: the admin API needs a bearer token, e.g. "
            "`openssl rand -hex 32 > /etc/sipguard/admin.token`",
        )
        return None, ""
    text = r.string(section["token_file"], "admin.token_file")
    if text is None:
        return None, ""
    data = read_file(r, text, "admin.token_file", "token file")
    if data is None:
        return None, ""
    path = r.file_path(text)
    token = data.rstrip(b"\r\n")  # `openssl rand -hex 32 > file` ends with a newline
    if len(token) < MIN_ADMIN_TOKEN_BYTES:
        r.error("admin.token_file", f"the token is shorter than {MIN_ADMIN_TOKEN_BYTES} bytes")
        return None, ""
    if not _TOKEN.match(token):
        r.error(
            "admin.token_file",
            "the token must be one line of visible ASCII without spaces "
            "(it travels in an HTTP header), e.g. `openssl rand -hex 32`",
        )
        return None, ""
    return token, f"file:{path}"  # read_file warned if others can read it
