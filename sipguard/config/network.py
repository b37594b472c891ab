"""The network sections: `listen`, `tls`, `upstream` and `upstream_source_port` (DESIGN §3).

Owns: listener URLs (`transport://address:port`), the TLS files and options, upstream SIP URIs
(`sip:HOST[:PORT][;transport=...]`, RFC 3261 §19.1) given as a string or as a mapping with
`uri`, `priority` and `weight` (the upstream pool, issue 14), duplicates among them; the fixed
port range of the upstream-facing UDP sockets (one port per worker) and its clashes with the UDP
listeners that the config alone can tell.

Never does: open a socket or load a certificate (it only checks that the files can be read),
resolve a name (sipguard does no DNS at runtime: addresses are IP literals), ask the routing
table which local address faces an upstream (the server does, when it binds).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from sipguard.config.reader import Reader, describe
from sipguard.config.secrets import readable
from sipguard.settings import DEFAULT_PORTS, TRANSPORTS, Limits, Listener, TlsSettings, Upstream

TLS_KEYS = ("certificate", "private_key", "ca_file", "verify_client")

_LISTENER = re.compile(
    r"(?P<transport>[a-z]+)://(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]:/]*)):(?P<port>[^:]*)\Z"
)
_UPSTREAM = re.compile(
    r"sip:(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]:;]*))(?::(?P<port>[^;]*))?(?P<params>(?:;[^;]*)*)\Z"
)


LISTENER_KEYS = ("url", "advertise")


def read_listeners(
    r: Reader, value: object, done: Mapping[str, Any]
) -> tuple[Listener, ...] | None:
    """`listen`: at least one `transport://address:port`, or a mapping with `url` and the
    `advertise` address our Via and Record-Route name (needed by a wildcard listener); no two
    alike."""
    if value is None:
        r.error("listen", "missing: give at least one transport://address:port")
        return None
    if not isinstance(value, list):
        r.error("listen", f"expected a list, got {describe(value)}")
        return None
    if not value:
        r.error("listen", "give at least one transport://address:port")
    found: list[Listener] = []
    seen: dict[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int], str] = {}
    for index, item in enumerate(value):
        where = f"listen[{index}]"
        read = _listener_item(r, item, where)
        if read is None:
            continue
        listener, text = read
        # the address as a value (not an int: 0.0.0.0 and :: are both 0, yet two sockets)
        identity = (listener.transport, ipaddress.ip_address(listener.host), listener.port)
        if identity in seen:
            r.error(where, f"{text!r}: duplicate of {seen[identity]}")
            continue
        seen[identity] = where
        if listener.host == "::":
            # An IPv6 socket is IPv6-only (IPV6_V6ONLY): IPv4 needs its own listener.
            r.warn(
                where,
                f"{text!r} receives IPv6 only; "
                f"add {listener.transport}://0.0.0.0:{listener.port} for IPv4",
            )
        if listener.is_wildcard and listener.advertise is None:
            r.warn(
                where,
                f"{text!r} listens on every local address, so our Via and Record-Route name "
                f"{listener.host}, which peers on other hosts cannot send to (their in-dialog "
                "requests and their answers to our requests fail); give the address they reach "
                f"us at: {{url: {text}, advertise: 203.0.113.5}}, or listen on that address",
            )
        found.append(listener)
    return tuple(found)


def _listener_item(r: Reader, item: object, where: str) -> tuple[Listener, str] | None:
    """One `listen` entry, and its URL as written: a URL, or a mapping with `url` and
    `advertise` (the address our Via and Record-Route name: a wildcard listener needs one)."""
    if isinstance(item, dict):
        section = r.mapping(item, where, LISTENER_KEYS)
        if section is None or "url" not in section:
            r.error(f"{where}.url", "missing: transport://address:port")
            return None
        text = r.string(section["url"], f"{where}.url")
        listener = None if text is None else listener_url(r, text, f"{where}.url")
        advertise = _advertise(r, section.get("advertise"), f"{where}.advertise", listener)
        if advertise is None and section.get("advertise") is not None:
            return None
    else:
        text = r.string(item, where)  # a URL item is a string
        listener = None if text is None else listener_url(r, text, where)
        advertise = None
    if listener is None or text is None:
        return None
    return dataclasses.replace(listener, advertise=advertise), text


_HOSTPORT = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]:/]*))(?::(?P<port>[^:]*))?\Z")


def _advertise(
    r: Reader, value: object, where: str, listener: Listener | None
) -> tuple[str, int] | None:
    """`advertise`: `address` or `address:port` (IPv6 in brackets); the port defaults to the
    listener's. Never an address nobody can send to (unspecified, multicast)."""
    if value is None:
        return None
    text = r.string(value, where)
    match = None if text is None else _HOSTPORT.match(text)
    if text is None or match is None:
        if text is not None:
            r.error(where, f"{text!r}: expected address or address:port, e.g. 203.0.113.5:5060")
        return None
    host = r.ip_literal(match["v6"], match["host"], where, text)
    port = r.port(match["port"], where, text) if match["port"] is not None else None
    if host is None or (match["port"] is not None and port is None):
        return None
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified or ip.is_multicast:
        r.error(where, f"{text!r}: peers cannot send to it; give the address they reach us at")
        return None
    return host, port or (listener.port if listener is not None else 5060)


def listener_url(r: Reader, text: str, where: str) -> Listener | None:
    match = _LISTENER.match(text)
    if match is None:
        r.error(
            where,
            f"{text!r}: expected transport://address:port, e.g. udp://127.0.0.1:5060 "
            "or tls://[::1]:5061 (IPv6 in brackets)",
        )
        return None
    transport = match["transport"]
    if transport not in TRANSPORTS:
        r.error(where, f"{text!r}: transport must be one of {', '.join(TRANSPORTS)}")
        return None
    host = r.ip_literal(match["v6"], match["host"], where, text)
    port = r.port(match["port"], where, text)
    if host is None or port is None:
        return None
    return Listener(transport, host, port)


def read_tls(r: Reader, value: object, done: Mapping[str, Any]) -> TlsSettings | None:
    """`tls`: the certificate and key every tls:// listener presents."""
    wanted = any(listener.transport == "tls" for listener in done.get("listen") or ())
    if value is None:
        if wanted:
            r.error("tls", "missing: a tls:// listener needs certificate and private_key")
        return None
    section = r.mapping(value, "tls", TLS_KEYS)
    if section is None:
        return None
    if not wanted:
        r.warn("tls", "no tls:// listener uses this section")
    paths: dict[str, str | None] = {}
    for key, what in (("certificate", "certificate"), ("private_key", "private key")):
        if key not in section:
            r.error(f"tls.{key}", "missing")
            paths[key] = None
            continue
        text = r.string(section[key], f"tls.{key}")
        private = key == "private_key"
        paths[key] = (
            None if text is None else readable(r, text, f"tls.{key}", what, private=private)
        )
    ca_file = None
    if section.get("ca_file") is not None:
        text = r.string(section["ca_file"], "tls.ca_file")
        if text is not None:
            ca_file = readable(r, text, "tls.ca_file", "CA file")
    verify = r.boolean(section.get("verify_client", False), "tls.verify_client")
    if verify and ca_file is None:
        r.error("tls.verify_client", "needs tls.ca_file to verify client certificates")
    certificate, private_key = paths["certificate"], paths["private_key"]
    if certificate is None or private_key is None or verify is None:
        return None
    timeout = (done.get("limits") or Limits()).tls_handshake_timeout
    return TlsSettings(certificate, private_key, ca_file, verify, timeout)


UPSTREAM_KEYS = ("uri", "priority", "weight")
MAX_PRIORITY = 1000
MAX_WEIGHT = 1000


def read_upstreams(
    r: Reader, value: object, done: Mapping[str, Any]
) -> tuple[Upstream, ...] | None:
    """`upstream`: at least one upstream, no two alike; each a SIP URI (priority 1, weight 1)
    or a mapping with `uri` and optional `priority` (lower is preferred) and `weight`."""
    if value is None:
        r.error("upstream", "missing: give at least one sip:HOST[:PORT][;transport=...]")
        return None
    if not isinstance(value, list):
        r.error("upstream", f"expected a list, got {describe(value)}")
        return None
    if not value:
        r.error("upstream", "give at least one sip:HOST[:PORT][;transport=...]")
    found: list[Upstream] = []
    seen: dict[tuple[str, str, int], str] = {}
    for index, item in enumerate(value):
        where = f"upstream[{index}]"
        upstream = upstream_entry(r, item, where)
        if upstream is None:
            continue
        identity = (upstream.transport, upstream.host, upstream.port)
        if identity in seen:
            r.error(where, f"{upstream.uri!r}: duplicate of {seen[identity]}")
            continue
        seen[identity] = where
        found.append(upstream)
    return tuple(found)


def upstream_entry(r: Reader, item: object, where: str) -> Upstream | None:
    """One `upstream` item: a URI string, or a mapping {uri, priority, weight}."""
    if not isinstance(item, dict):
        text = r.string(item, where)
        return upstream_uri(r, text, where) if text is not None else None
    section = r.mapping(item, where, UPSTREAM_KEYS)
    if section is None:
        return None
    if "uri" not in section:
        r.error(f"{where}.uri", "missing: give sip:HOST[:PORT][;transport=...]")
        return None
    text = r.string(section["uri"], f"{where}.uri")
    upstream = upstream_uri(r, text, f"{where}.uri") if text is not None else None
    priority = r.integer(section.get("priority", 1), f"{where}.priority", 0, MAX_PRIORITY)
    weight = r.integer(section.get("weight", 1), f"{where}.weight", 1, MAX_WEIGHT)
    if upstream is None or priority is None or weight is None:
        return None
    return dataclasses.replace(upstream, priority=priority, weight=weight)


def upstream_uri(r: Reader, text: str, where: str) -> Upstream | None:
    match = _UPSTREAM.match(text)
    if match is None:
        r.error(
            where,
            f"{text!r}: expected sip:HOST[:PORT][;transport=udp|tcp|tls], "
            "e.g. sip:127.0.0.1:5070;transport=udp (IPv6 in brackets)",
        )
        return None
    transport = "udp"
    for param in filter(None, match["params"].split(";")):
        name, _, param_value = param.partition("=")
        # RFC 3261 §19.1.4: URI parameter names and transport values compare case-insensitively.
        if name.lower() != "transport":
            r.error(where, f"{text!r}: unsupported URI parameter {name!r}")
            return None
        transport = param_value.lower()
        if transport not in TRANSPORTS:
            r.error(where, f"{text!r}: transport must be one of {', '.join(TRANSPORTS)}")
            return None
    host = r.ip_literal(match["v6"], match["host"], where, text)
    if match["port"] is None:
        port: int | None = DEFAULT_PORTS[transport]  # RFC 3261 §19.1.2
    else:
        port = r.port(match["port"], where, text)
    if host is None or port is None:
        return None
    return Upstream(text, transport, host, port)


SOURCE_PORT_KEY = "upstream_source_port"
# Linux's default net.ipv4.ip_local_port_range: any program's outgoing socket may hold such a port.
EPHEMERAL_PORTS = range(32768, 61000)


def read_upstream_source_port(r: Reader, value: object, done: Mapping[str, Any]) -> int | None:
    """`upstream_source_port`: the port of the upstream-facing UDP socket (one per address family
    with a UDP upstream) of worker 0; worker i binds it + i, so `workers` ports from it must
    exist and be no UDP listener's of that family. Absent: an ephemeral port (as before)."""
    if value is None:
        return None
    base = r.integer(value, SOURCE_PORT_KEY, 1, 65535)
    if base is None:
        return None
    workers = done.get("workers") or 1
    last = base + workers - 1
    if last > 65535:
        r.error(
            SOURCE_PORT_KEY,
            f"{base}: worker {workers - 1} of {workers} would bind {last}, above 65535; "
            f"give at most {65536 - workers}",
        )
        return None
    ports = str(base) if workers == 1 else f"{base}..{last} (one per worker)"
    families = {":" in u.host for u in done.get("upstream") or () if u.transport == "udp"}
    if not families:
        r.warn(SOURCE_PORT_KEY, "no UDP upstream: sipguard opens no upstream-facing UDP socket")
    for index, listener in enumerate(done.get("listen") or ()):
        if listener.transport != "udp" or not base <= listener.port <= last:
            continue
        if (":" in listener.host) not in families:
            continue
        clash = f"{ports}: listen[{index}] {listener.url!r} uses port {listener.port}"
        if listener.is_wildcard:
            r.error(SOURCE_PORT_KEY, f"{clash} on every address; give ports no UDP listener uses")
        else:
            r.warn(
                SOURCE_PORT_KEY,
                f"{clash}: if {listener.host} is the address toward the upstream, sipguard "
                "cannot start; give ports no UDP listener uses",
            )
    if base in EPHEMERAL_PORTS or last in EPHEMERAL_PORTS:
        r.warn(
            SOURCE_PORT_KEY,
            f"{ports} overlaps the kernel's ephemeral ports (32768..60999 by default): another "
            "program's socket may hold one when sipguard starts; give ports below 32768",
        )
    return base
