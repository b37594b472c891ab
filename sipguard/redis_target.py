"""`state.redis_url`: which Redis deployment it names (pure: no redis-py, no I/O).

Owns: the URL forms, checked by `sipguard.config.state` (`check`) and connected to by
`sipguard.state.redis_url` (`parse`); one home below both, which may not import each other:
  redis://[[USER]:PASSWORD@]HOST:PORT[/DB]    one server (redis-py's own URL)
  rediss://...                                the same over TLS
  unix:///PATH[?db=N]                         one server on a Unix socket
  redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]
      the master of SERVICE as the Sentinels name it (redis.asyncio.sentinel: `master_for`);
      a failover moves the client to the new master by itself. The password is the master's
      (Sentinels themselves are asked without one)
  redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]     (rediss+cluster:// for TLS)
      a Redis Cluster from any of its nodes (redis.asyncio.cluster.RedisCluster), database 0
      only (Cluster has no other). Every key the state writes together in one script has the
      same hash tag, so it lives in one slot (see `sipguard.state.redis_store`)

Never does: put the URL or its password in a message (`check` names the part that is wrong),
connect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

SINGLE_SCHEMES: Final = ("redis", "rediss", "unix")
SENTINEL_SCHEMES: Final = ("redis+sentinel",)
CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
FORMS: Final = (
    "use redis://HOST:PORT/DB, rediss:// (TLS), unix:///PATH, "
    "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] or "
    "redis+cluster://HOST:PORT[,HOST:PORT...]"
)
_HOSTPORT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^\[\]:,/]+)):(?P<port>\d{1,5})\Z")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed `state.redis_url`. `kind`: single, sentinel or cluster; `nodes` the Sentinels
    or the Cluster's seed nodes; `service` the Sentinel master's name."""

    kind: str
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def _nodes(text: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in text.split(","):
        match = _HOSTPORT.match(part.strip())
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError("every node must be HOST:PORT (an IPv6 address in brackets)")
        nodes.append((match["v6"] or match["host"], int(match["port"])))
    return tuple(nodes)


def _credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """(username, password, the host list) of `[[USER]:PASSWORD@]HOSTS`."""
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    if not colon:
        return None, unquote(user) or None, hosts
    return unquote(user) or None, unquote(password) or None, hosts


def parse(url: str) -> RedisTarget:
    """The deployment `url` names; ValueError says what is wrong without quoting the URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {FORMS}")
    if scheme in SINGLE_SCHEMES:
        parts = urlsplit(url)
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"no host: {FORMS}")
        return RedisTarget("single", url)
    if scheme not in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: {FORMS}")
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0]
    username, password, hosts = _credentials(netloc)
    nodes = _nodes(hosts)
    if scheme in SENTINEL_SCHEMES:
        service, _, db = path.partition("/")
        if not service:
            raise ValueError("no service: redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]")
        if db and not db.isdigit():
            raise ValueError(f"the database after the service must be a number, not {db!r}")
        return RedisTarget(
            "sentinel", url, nodes, unquote(service), int(db or 0), username, password
        )
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only: drop the /DB")
    tls = scheme.startswith("rediss")
    return RedisTarget("cluster", url, nodes, "", 0, username, password, tls)


def check(url: str) -> str | None:
    """What is wrong with `url`, in words without the URL; None when it is usable."""
    try:
        parse(url)
    except ValueError as exc:
        return str(exc)
    return None
