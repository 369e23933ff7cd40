"""The Redis connection and what every part of the store shares: settings and scripts."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from bgdownload.store.scripts import Scripts


def open_redis(url: str, *, max_connections: int = 50) -> Redis:
    """A decoding Redis client whose commands wait for a free pooled connection.

    redis-py's default pool refuses a connection past its limit (MaxConnectionsError);
    hundreds of downloads or streams at once must queue for one instead.
    """
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None,
        decode_responses=True, socket_timeout=None,
    )
    return Redis.from_pool(pool)  # closes the pool with the client


class StoreBase:
    """Holds the client, retention and stream lengths, and the registered scripts."""

    def __init__(
        self,
        redis: Redis,
        *,
        retention: float = 7 * 86400,
        job_stream_maxlen: int = 1000,
        owner_stream_maxlen: int = 10000,
    ) -> None:
        # redis-py types each reply as a union of every protocol shape; this client
        # decodes responses, so replies are handled as the strings they are.
        self.redis: Any = redis
        self.retention = max(1, int(retention))
        self.job_stream_maxlen = job_stream_maxlen
        self.owner_stream_maxlen = owner_stream_maxlen
        self._scripts = Scripts.register(redis)

    async def ping(self) -> None:
        """Raise when Redis cannot be reached."""
        await self.redis.ping()

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self.redis.aclose()
