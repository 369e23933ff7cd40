"""Speed caps: a token bucket shared by any number of downloads.

One bucket per job (``max_speed``) and one per worker process
(``BGDOWNLOAD_MAX_SPEED``); a download awaits both for every chunk it reads.

The bucket lends: :meth:`TokenBucket.consume` takes the tokens at once (the
balance may go negative) and sleeps until the debt is repaid. Consumers
therefore queue in arrival order without a lock, a chunk bigger than the burst
still passes, and the long-run rate is exact: after ``t`` seconds at most
``burst + rate * t`` bytes have been granted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

#: smallest burst, so tiny rates do not force one syscall per few bytes
MIN_BURST = 16 * 1024


class TokenBucket:
    """``rate`` bytes per second with at most ``burst`` bytes granted ahead.

    >>> bucket = TokenBucket(10 * 1024 * 1024)   # 10 MiB/s, burst rate/10
    >>> # await bucket.consume(len(chunk))  before writing each chunk
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self._clock = clock
        self._sleep = sleep
        self._rate = float(rate)
        self._burst = float(burst) if burst is not None else max(rate / 10, MIN_BURST)
        if self._burst <= 0:
            raise ValueError(f"burst must be positive, got {burst!r}")
        self._tokens = self._burst
        self._last = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._last = now

    def reserve(self, n: int) -> float:
        """Take ``n`` tokens now; return the seconds the caller must wait before using them."""
        if n < 0:
            raise ValueError("cannot consume a negative amount")
        self._refill()
        self._tokens -= n
        return -self._tokens / self._rate if self._tokens < 0 else 0.0

    async def consume(self, n: int) -> None:
        """Wait until ``n`` bytes may pass under this cap."""
        delay = self.reserve(n)
        if delay > 0:
            await self._sleep(delay)

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        """Change the cap; tokens already lent stay lent."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self._refill()
        self._rate = float(rate)
        self._burst = float(burst) if burst is not None else max(rate / 10, MIN_BURST)
        self._tokens = min(self._tokens, self._burst)


async def consume_all(buckets: tuple[TokenBucket, ...], n: int) -> None:
    """Pass ``n`` bytes under every cap at once (job cap and worker cap).

    Reserving in all buckets before sleeping waits for the slowest cap only,
    instead of the sum of both delays.
    """
    if not buckets:
        return
    delay = max(bucket.reserve(n) for bucket in buckets)
    if delay > 0:
        await buckets[0]._sleep(delay)
