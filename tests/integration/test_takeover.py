"""Takeover of a SIGKILLed worker's downloads by a live worker, judged by heartbeats.

Workers run with the default redelivery timeout (60 s) so only the heartbeat
watch can meet the 30 s contract deadline (docs/api.md §11, "Takeover").
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bgdownload import keys
from bgdownload.service import Service
from bgdownload.store import Store
from bgdownload.worker.takeover import Liveness
from tests.support.source_server import SourceServer
from tests.support.stack import WorkerProcess, wait_for_state

OWNER = "local"
#: the contract: a dead worker's download moves again within this long (API.md §11)
TAKEOVER_DEADLINE = 30.0
#: the default, not the test stack's quick one: takeover must not depend on it
DEFAULT_REDELIVERY = {"BGDOWNLOAD_REDELIVERY_TIMEOUT": "60"}


@dataclass
class Stream:
    """One body the source sent: when it began and ended (monotonic), and its Range."""

    path: str
    range: str | None
    began: float
    ended: float | None = None


@dataclass
class TimedSource(SourceServer):
    """The test source server, also recording when each body stream began and ended."""

    streams: list[Stream] = field(default_factory=list)

    async def _bytes(self, method, n, key, q, headers, writer):  # type: ignore[no-untyped-def]
        stream = Stream(f"/bytes/{n}", headers.get("range"), time.monotonic())
        self.streams.append(stream)
        try:
            return await super()._bytes(method, n, key, q, headers, writer)
        finally:
            stream.ended = time.monotonic()

    def streams_to(self, path: str) -> list[Stream]:
        return [s for s in list(self.streams) if s.path == path]


@pytest.fixture
def source() -> Iterator[TimedSource]:
    server = TimedSource().start()
    try:
        yield server
    finally:
        server.stop()


async def _wait_loaded(service: Service, job_id: str, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await service.get(OWNER, job_id)).progress.loaded < at_least:
        assert time.monotonic() < deadline, "the download never got going"
        await asyncio.sleep(0.05)


async def _wait_on_disk(download_dir: Path, name_part: str, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while sum(p.stat().st_size for p in download_dir.glob(f"*{name_part}*.part")) < at_least:
        assert time.monotonic() < deadline, "nothing reached the .part file"
        await asyncio.sleep(0.05)


async def _wait_new_stream(source: TimedSource, path: str, after: int, timeout: float) -> Stream:
    """The first body stream of ``path`` beyond the first ``after`` ones."""
    deadline = time.monotonic() + timeout
    while len(source.streams_to(path)) <= after:
        assert time.monotonic() < deadline, f"no new request for {path} within {timeout} s"
        await asyncio.sleep(0.05)
    return source.streams_to(path)[after]


def _assert_one_at_a_time(streams: list[Stream]) -> None:
    """No two bodies of the job were streamed at once: one worker at a time."""
    ordered = sorted(streams, key=lambda s: s.began)
    for earlier, later in itertools.pairwise(ordered):
        assert earlier.ended is not None and earlier.ended <= later.began, (earlier, later)


async def _start_long(service: Service, source: TimedSource, seed: str, size: int) -> str:
    job, _ = await service.create(OWNER, {
        "url": source.url(f"/bytes/{size}?seed={seed}&rate=600000"), "filename": f"{seed}.bin",
    })
    return job.id


async def _kill_and_await_takeover(
    service: Service, holder: WorkerProcess, source: TimedSource, job_id: str, size: int
) -> None:
    """SIGKILL ``holder``; another worker must stream the job again within the deadline,
    from where it was, and finish it — never two workers at once."""
    path = f"/bytes/{size}"
    before = len(source.streams_to(path))
    holder.kill()
    killed_at = time.monotonic()
    resumed = await _wait_new_stream(source, path, before, TAKEOVER_DEADLINE)
    assert resumed.began - killed_at < TAKEOVER_DEADLINE
    assert resumed.range is not None and int(resumed.range.split("=")[1].split("-")[0]) > 0
    done = await wait_for_state(service, OWNER, job_id, {"completed", "failed"}, timeout=60)
    assert done.state.value == "completed", done.error
    assert done.sha256 == source.expected_sha256(size, done.filename.removesuffix(".bin"))
    _assert_one_at_a_time(source.streams_to(path))


async def _holder_of(
    service: Service, job_id: str, workers: tuple[WorkerProcess, ...]
) -> WorkerProcess:
    """The worker process whose id (host:pid:nonce) holds the job's lease."""
    lease = await service.store.redis.get(f"bgd:lease:{job_id}")
    assert lease, "the running job has no lease"
    pid = int(lease.split(" ")[0].split(":")[1])
    return next(w for w in workers if pid in w.pids)


async def test_an_idle_worker_takes_over_a_killed_workers_download_within_30s(
    service: Service, start_worker, source: TimedSource, download_dir: Path
) -> None:
    workers = (start_worker(**DEFAULT_REDELIVERY), start_worker(**DEFAULT_REDELIVERY))
    size = 6_000_000
    job_id = await _start_long(service, source, "idle", size)
    await _wait_loaded(service, job_id, 500_000)
    await _wait_on_disk(download_dir, "idle", 300_000)
    holder = await _holder_of(service, job_id, workers)
    survivor = workers[1] if holder is workers[0] else workers[0]
    await _kill_and_await_takeover(service, holder, source, job_id, size)
    assert "stopped beating; took over message" in survivor.log()


async def test_a_busy_worker_with_a_free_slot_takes_over_within_30s(
    service: Service, start_worker, source: TimedSource, download_dir: Path
) -> None:
    """The survivor runs two long downloads of its own and has one slot left."""
    first: WorkerProcess = start_worker(BGDOWNLOAD_CONCURRENCY="1", **DEFAULT_REDELIVERY)
    size = 6_000_000
    job_id = await _start_long(service, source, "busy", size)
    await _wait_loaded(service, job_id, 300_000)
    second: WorkerProcess = start_worker(
        BGDOWNLOAD_CONCURRENCY="3", BGDOWNLOAD_OWNER_CONCURRENCY="3", **DEFAULT_REDELIVERY
    )  # one owner's three downloads: no cap in the way
    own = [await _start_long(service, source, f"own{i}", 15_000_000) for i in range(2)]
    for other in own:  # the first worker is full: these run on the second
        await _wait_loaded(service, other, 100_000)
    await _wait_on_disk(download_dir, "busy", 200_000)
    await _kill_and_await_takeover(service, first, source, job_id, size)
    assert "stopped beating; took over message" in second.log()
    for other in own:
        done = await wait_for_state(service, OWNER, other, {"completed", "failed"}, timeout=60)
        assert done.state.value == "completed", done.error


async def test_a_full_worker_waits_for_a_free_slot_before_taking_over(
    service: Service, start_worker, source: TimedSource, download_dir: Path
) -> None:
    first: WorkerProcess = start_worker(BGDOWNLOAD_CONCURRENCY="1", **DEFAULT_REDELIVERY)
    size, seed = 4_000_000, "full"
    path = f"/bytes/{size}"
    job, _ = await service.create(OWNER, {
        "url": source.url(f"{path}?seed={seed}&rate=600000"), "filename": "full.bin",
    })
    await _wait_loaded(service, job.id, 300_000)
    await _wait_on_disk(download_dir, seed, 200_000)
    start_worker(BGDOWNLOAD_CONCURRENCY="1", **DEFAULT_REDELIVERY)
    own, _ = await service.create(OWNER, {
        "url": source.url("/bytes/9000000?seed=own&rate=600000"), "filename": "own.bin",
    })
    await _wait_loaded(service, own.id, 100_000)
    first.kill()
    mine = await wait_for_state(service, OWNER, own.id, {"completed", "failed"}, timeout=60)
    assert mine.state.value == "completed", mine.error
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=60)
    assert done.state.value == "completed", done.error
    assert done.sha256 == source.expected_sha256(size, seed)
    own_stream = source.streams_to("/bytes/9000000")[-1]
    resumed = source.streams_to(path)[-1]
    assert own_stream.ended is not None and resumed.began >= own_stream.ended


def test_liveness_judges_only_a_heartbeat_that_stood_still_while_watched() -> None:
    watch = Liveness(dead_after=10, max_gap=5)
    assert watch.observe(0, {"a": 1.0, "b": 1.0}, ["a", "b"]) == []
    assert watch.observe(4, {"a": 1.0, "b": 5.0}, ["a", "b"]) == []
    assert watch.observe(8, {"a": 1.0, "b": 9.0}, ["a", "b"]) == []
    assert watch.observe(10, {"a": 1.0, "b": 11.0}, ["a", "b"]) == ["a"]
    # a's messages were taken over; a worker missing from the heartbeats is judged alike
    assert watch.observe(12, {"b": 13.0}, ["b", "c"]) == []
    assert watch.observe(16, {"b": 17.0}, ["b", "c"]) == []
    assert watch.observe(20, {"b": 21.0}, ["b", "c"]) == []
    assert watch.observe(22, {"b": 23.0}, ["b", "c"]) == ["c"]


def test_liveness_starts_over_after_a_gap_in_the_watch() -> None:
    """After a Redis outage every heartbeat is old: nobody is judged on that alone."""
    watch = Liveness(dead_after=10, max_gap=5)
    assert watch.observe(0, {"a": 1.0}, ["a"]) == []
    assert watch.observe(4, {"a": 1.0}, ["a"]) == []
    assert watch.observe(30, {"a": 1.0}, ["a"]) == []  # 26 s unwatched
    assert watch.observe(34, {"a": 1.0}, ["a"]) == []
    watch.forget()
    assert watch.observe(38, {"a": 1.0}, ["a"]) == []
    assert watch.observe(42, {"a": 1.0}, ["a"]) == []
    assert watch.observe(46, {"a": 1.0}, ["a"]) == []
    assert watch.observe(48, {"a": 1.0}, ["a"]) == ["a"]


async def test_a_lease_of_a_worker_judged_dead_is_broken_and_a_beat_revokes_that(redis) -> None:
    holder, claimant = Store(redis), Store(redis)
    holder.lease_holder, claimant.lease_holder = "host:1:aa", "host:2:bb"
    assert await holder.acquire_lease("j", "t1", 30)
    assert not await claimant.acquire_lease("j", "t2", 30)
    await redis.set(keys.dead_worker("host:1:aa"), "1")
    await holder.heartbeat("host:1:aa", {}, ttl=30)  # alive after all: the mark goes
    assert not await claimant.acquire_lease("j", "t2", 30)
    await redis.set(keys.dead_worker("host:1:aa"), "1")
    assert await claimant.acquire_lease("j", "t2", 30)
    assert await holder.renew_leases([("j", "t1")], 30) == [False]  # the holder stops
    assert await claimant.renew_leases([("j", "t2")], 30) == [True]


async def test_a_worker_that_lost_its_lease_leaves_the_message_to_the_new_holder(redis) -> None:
    old, new = Store(redis), Store(redis)
    old.lease_holder, new.lease_holder = "host:1:aa", "host:2:bb"
    await redis.set(keys.run("task"), "j")
    assert await new.acquire_lease("j", "t2", 30)
    await old.release_lease_and_run("j", "t1", "task")
    assert await redis.get(keys.run("task")) == "j" and await new.has_lease("j")
    await new.release_lease_and_run("j", "t2", "task")
    assert await redis.get(keys.run("task")) is None and not await new.has_lease("j")
