"""The Redis connection and what every part of the store shares: retry policy, settings, scripts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, NoScriptError, ReadOnlyError, TimeoutError

from bgdownload.store.scripts import Scripts

T = TypeVar("T")

log = logging.getLogger(__name__)

#: how long one Redis call keeps retrying a lost connection before it raises (seconds):
#: long enough for a restart or a failover, short enough for an API answer to stay prompt
RETRY_BUDGET = 4.0
#: a connection attempt to a host that does not answer gives up after this long
CONNECT_TIMEOUT = 2.0

#: when the outermost retry of the current call runs out (redis-py nests its retries)
_deadline: ContextVar[float | None] = ContextVar("bgdownload_redis_retry_deadline", default=None)


class BudgetRetry(Retry):
    """redis-py's :class:`Retry` with one time budget for a whole call.

    redis-py retries a command and, inside each try, the reconnect too, so the
    number of tries multiplies; here every nested retry of one call shares the
    deadline the outermost one set, and no sleep runs past it.
    """

    def __init__(self, budget: float = RETRY_BUDGET) -> None:
        super().__init__(ExponentialBackoff(cap=1.0, base=0.05), retries=100,
                         supported_errors=(ConnectionError, TimeoutError, ReadOnlyError))
        self.budget = budget

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        deadline = _deadline.get()
        token = _deadline.set(time.monotonic() + self.budget) if deadline is None else None
        try:
            return await self._retry_until(
                _deadline.get() or 0.0, do, fail, is_retryable, with_failure_count
            )
        finally:
            if token is not None:
                _deadline.reset(token)

    async def _retry_until(
        self,
        deadline: float,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None,
        with_failure_count: bool,
    ) -> T:
        failures = 0  # ExponentialBackoff keeps no state between calls: nothing to reset
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                left = deadline - time.monotonic()
                if left <= 0 or failures > self._retries:
                    raise
                await asyncio.sleep(min(left, self._backoff.compute(failures)))


#: what a Redis that is away (restarting, failing over) raises: worth waiting out.
#: NoScriptError: a pipeline's scripts were loaded into the Redis that went away
OUTAGE_ERRORS = (ConnectionError, TimeoutError, ReadOnlyError, NoScriptError, OSError)


async def outlast(call: Callable[[], Awaitable[T]], *, limit: float, what: str) -> T:
    """``call()``, tried again while Redis is away, for up to ``limit`` seconds in all.

    For writes that must land rather than fail (a worker's state changes): ``call``
    must be safe to repeat. Logs the outage once and, when it ends, that Redis is back.
    """
    started = time.monotonic()
    failures = 0
    while True:
        try:
            result = await call()
        except OUTAGE_ERRORS as exc:
            failures += 1
            waited = time.monotonic() - started
            if waited >= limit:
                raise
            if failures == 1:
                log.warning("Redis unavailable (%s); %s waits for it", exc, what)
            await asyncio.sleep(min(limit - waited, 5.0, 0.25 * 2**failures))
            continue
        if failures:
            log.warning("Redis is back after %.1f s; %s went through",
                        time.monotonic() - started, what)
        return result


def open_redis(url: str, *, max_connections: int = 50) -> Redis:
    """A decoding Redis client whose commands wait for a free pooled connection.

    redis-py's default pool refuses a connection past its limit (MaxConnectionsError);
    hundreds of downloads or streams at once must queue for one instead. Every
    command rides out a Redis restart or failover of up to :data:`RETRY_BUDGET`
    seconds (reconnecting, and re-subscribing a pub/sub) before it raises; the
    writes it may repeat are idempotent (docs/internals.md "Redis restarts").
    """
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None,
        decode_responses=True, socket_timeout=None, socket_connect_timeout=CONNECT_TIMEOUT,
        retry=BudgetRetry(),
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
