"""The redis-py client of `state.redis_url` (the forms are `sipguard.redis_target`'s).

Owns: `connect`, one client for each deployment, with the pool's bounds: at most `pool_size`
connections (per node for a Cluster) with the store's timeouts, a caller waiting for a free
connection rather than failing (Sentinel's master pool made blocking like the single server's).

Never does: connect at import (redis-py is imported by the store only with `backend: redis`),
put the URL in a message.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sipguard.redis_target import parse


def connect(url: str, *, pool_size: int, timeout: float, retry: Any, retry_on: list[Any]) -> Any:
    """The redis-py asyncio client of `url`: `redis.asyncio.Redis` (one server, or the master of
    a Sentinel service) or `redis.asyncio.cluster.RedisCluster`, bounded as described above."""
    import redis.asyncio as aioredis

    target = parse(url)
    timeouts: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if target.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            ssl=target.tls,
            max_connections=pool_size,
            retry=retry,
            **timeouts,
        )
    if target.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes), sentinel_kwargs=timeouts, **timeouts
        )
        return sentinel.master_for(
            target.service,
            connection_pool_class=_blocking_sentinel_pool(),
            db=target.db,
            username=target.username,
            password=target.password,
            max_connections=pool_size,
            timeout=timeout,  # waiting for a free connection
            retry=retry,
            retry_on_error=retry_on,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=timeout,  # waiting for a free connection
        retry=retry,
        retry_on_error=retry_on,
        **timeouts,
    )
    return aioredis.Redis(connection_pool=pool)


@cache
def _blocking_sentinel_pool() -> type:
    from redis.asyncio.connection import BlockingConnectionPool
    from redis.asyncio.sentinel import SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """Sentinel's master pool that waits for a free connection (as the single server's
        does) instead of failing when all POOL_SIZE are in use."""

    return BlockingSentinelPool
