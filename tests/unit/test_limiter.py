"""TokenBucket logic on a fake clock: no wall-clock timing anywhere."""

from __future__ import annotations

import asyncio

import pytest

from bgdownload.engine.limiter import TokenBucket, consume_all


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.grants: list[tuple[float, int]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def bucket(t: FakeTime, rate: float, burst: float | None = None) -> TokenBucket:
    return TokenBucket(rate, burst, clock=t.clock, sleep=t.sleep)


async def test_long_run_rate_is_exact() -> None:
    t = FakeTime()
    b = bucket(t, 1_000_000)
    sent = 0
    while t.now < 10.0:
        await b.consume(65536)
        sent += 65536
    # Everything granted by time T is at most burst + rate*T, and at least rate*T - chunk.
    assert sent <= b.burst + 1_000_000 * t.now + 65536
    assert abs(sent / t.now - 1_000_000) / 1_000_000 < 0.05


async def test_no_window_exceeds_twice_the_rate() -> None:
    t = FakeTime()
    b = bucket(t, 100_000)
    grants: list[tuple[float, int]] = []
    while t.now < 10.0:
        await b.consume(4096)
        grants.append((t.now, 4096))
    for start in [x / 10 for x in range(90)]:
        in_window = sum(n for when, n in grants if start <= when < start + 1.0)
        assert in_window <= 2 * 100_000


async def test_default_burst_is_a_tenth_of_the_rate() -> None:
    t = FakeTime()
    assert bucket(t, 10_000_000).burst == 1_000_000
    assert bucket(t, 1000).burst == 16 * 1024  # floor keeps syscalls sane


async def test_first_burst_is_free_then_waits() -> None:
    t = FakeTime()
    b = bucket(t, 1000, burst=500)
    await b.consume(500)
    assert t.now == 0.0
    await b.consume(1000)
    assert t.now == pytest.approx(1.0)


async def test_chunk_larger_than_burst_passes() -> None:
    t = FakeTime()
    b = bucket(t, 1000, burst=100)
    await b.consume(5000)
    assert t.now == pytest.approx(4.9)


async def test_idle_time_refills_only_up_to_burst() -> None:
    t = FakeTime()
    b = bucket(t, 1000, burst=100)
    await b.consume(100)
    t.now += 60.0  # a long idle period must not bank a minute of tokens
    await b.consume(1100)
    assert t.now == pytest.approx(61.0)


async def test_shared_bucket_splits_rate_between_consumers() -> None:
    t = FakeTime()
    b = bucket(t, 1000, burst=100)
    # Reservations are handed out in order: the second consumer waits behind the first.
    assert b.reserve(100) == 0.0
    assert b.reserve(1000) == pytest.approx(1.0)
    assert b.reserve(1000) == pytest.approx(2.0)


async def test_consume_all_waits_for_the_slowest_cap() -> None:
    t = FakeTime()
    job = bucket(t, 1000, burst=1)
    worker = bucket(t, 500, burst=1)
    await consume_all((job, worker), 1001)
    assert t.now == pytest.approx(2.0)  # the worker cap, not the sum of both


async def test_real_sleep_is_used_by_default() -> None:
    b = TokenBucket(10_000_000)
    await asyncio.wait_for(b.consume(1024), 1.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(10, burst=0)
    with pytest.raises(ValueError):
        TokenBucket(10).reserve(-1)


async def test_set_rate() -> None:
    t = FakeTime()
    b = bucket(t, 1000, burst=100)
    await b.consume(100)
    b.set_rate(2000, burst=100)
    await b.consume(2000)
    assert t.now == pytest.approx(1.0)
