"""Fair shares across owners (docs/api.md §17): owners take turns, ``priority`` orders only an
owner's own jobs, and ``BGDOWNLOAD_OWNER_CONCURRENCY`` caps an owner's downloads per worker.

The store tests claim on a real Redis; the others run a real ``bgdownload serve`` with two
owners' tokens, real worker processes and the test source server.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from bgdownload import keys
from bgdownload.models import Job, JobState, utcnow
from bgdownload.store import Store
from bgdownload.store.queue import CAPPED
from tests.support.source_server import SourceServer
from tests.support.stack import WorkerProcess

TOKENS = "token-a:alice,token-b:bob"
API = "/api/v1/downloads"
#: a download that never ends within a test: the source sends 20 kB/s
SLOW = "/bytes/50000000?rate=20000&seed="


_CREATED = itertools.count()


def new_job(owner: str, priority: int = 0) -> Job:
    """A job created a millisecond after the one before (ties would order by id)."""
    created = utcnow() + timedelta(milliseconds=next(_CREATED))
    return Job(id=str(uuid.uuid4()), owner=owner, url="http://example.org/f",
               priority=priority, created_at=created)


async def claim(store: Store, capped: tuple[str, ...] = ()) -> str | None:
    """The id a fresh queue message claims, or :data:`CAPPED`."""
    found = await store.claim_and_lease(uuid.uuid4().hex, uuid.uuid4().hex, 5, capped=capped)
    if found is None or found == CAPPED:
        return found
    return found[0]


# -- the queue itself ---------------------------------------------------------------------


async def test_owners_take_turns_and_priority_orders_only_an_owners_own_jobs(redis) -> None:
    store = Store(redis)
    a_old, _ = await store.create(new_job("alice"))
    a_urgent, _ = await store.create(new_job("alice", priority=1000))
    a_young, _ = await store.create(new_job("alice"))
    b_low, _ = await store.create(new_job("bob", priority=-1000))
    b_high, _ = await store.create(new_job("bob", priority=3))
    assert await store.queue_depth() == 5
    served = [await claim(store) for _ in range(6)]
    assert served == [a_urgent.id, b_high.id, a_old.id, b_low.id, a_young.id, None]
    assert await store.queue_depth() == 0
    assert await redis.zcard(keys.OWNER_ROTATION) == 0


async def test_an_owner_that_joins_waits_one_turn_not_the_others_whole_queue(redis) -> None:
    store = Store(redis)
    alice = [(await store.create(new_job("alice", priority=1000)))[0] for _ in range(5)]
    assert await claim(store) == alice[0].id
    bob, _ = await store.create(new_job("bob", priority=-1000))
    assert [await claim(store) for _ in range(2)] == [alice[1].id, bob.id]


async def test_a_claim_passes_over_capped_owners_and_says_when_only_they_wait(redis) -> None:
    store = Store(redis)
    a1, _ = await store.create(new_job("alice"))
    a2, _ = await store.create(new_job("alice"))
    assert await claim(store, ("alice",)) == CAPPED
    assert await store.queue_depth() == 2  # nothing was taken
    bob, _ = await store.create(new_job("bob"))
    assert await claim(store, ("alice", "carol")) == bob.id
    assert await claim(store, ("alice",)) == CAPPED
    assert [await claim(store), await claim(store)] == [a1.id, a2.id]
    assert await claim(store, ("alice",)) is None


async def test_jobs_leaving_the_queue_leave_depth_and_rotation_right(redis) -> None:
    store = Store(redis)
    paused, _ = await store.create(new_job("alice"))
    cancelled, _ = await store.create(new_job("bob"))
    deleted, _ = await store.create(new_job("carol"))
    await store.transition(paused.id, JobState.PAUSED)
    await store.transition(cancelled.id, JobState.CANCELLED)
    assert await redis.zrange(keys.OWNER_ROTATION, 0, -1) == ["carol"]
    await store.delete(deleted)
    assert await store.queue_depth() == 0
    assert await claim(store) is None
    assert await redis.zcard(keys.OWNER_ROTATION) == 0  # the claim dropped carol's empty turn
    resumed, _ = await store.transition(paused.id, JobState.WAITING)
    assert await store.queue_depth() == 1
    assert await claim(store) == resumed.id


async def test_a_job_handed_back_between_retries_rejoins_its_owners_queue(redis) -> None:
    store = Store(redis)
    job, _ = await store.create(new_job("alice"))
    assert await claim(store) == job.id
    job, _ = await store.transition(job.id, JobState.ACTIVE)
    job, _ = await store.transition(job.id, JobState.WAITING, queue=False)  # in backoff
    assert await store.queue_depth() == 0
    await store.requeue(job)
    assert await store.queue_depth() == 1
    assert await claim(store) == job.id


async def test_jobs_left_in_the_single_queue_of_an_older_version_still_run(redis) -> None:
    """What an upgrade finds: waiting jobs in ``bgd:queue`` and no owner queues."""
    store = Store(redis)
    jobs = [
        (await store.create(new_job(owner, priority)))[0]
        for owner, priority in [("alice", 0), ("alice", 9), ("bob", 0)]
    ]
    for job in jobs:  # as the older version stored them
        await redis.zrem(keys.owner_waiting(job.owner), job.id)
        score = keys.queue_score(job.priority, int(job.created_at.timestamp() * 1000))
        await redis.zadd(keys.LEGACY_QUEUE, {job.id: score})
    await redis.delete(keys.OWNER_ROTATION)
    assert await store.queue_depth() == 3
    cancelled, _ = await store.create(new_job("carol"))
    await redis.zrem(keys.owner_waiting("carol"), cancelled.id)
    await redis.zadd(keys.LEGACY_QUEUE, {cancelled.id: 0})
    await store.transition(cancelled.id, JobState.CANCELLED)  # leaves the old queue too
    served = [await claim(store) for _ in range(4)]
    assert served == [jobs[1].id, jobs[2].id, jobs[0].id, None]
    assert not await redis.exists(keys.LEGACY_QUEUE)


# -- a real server and real workers -------------------------------------------------------


@pytest.fixture
async def owners(start_server) -> AsyncIterator[dict[str, httpx.AsyncClient]]:  # type: ignore[no-untyped-def]
    """HTTP clients of ``alice`` and ``bob`` on a real ``bgdownload serve`` with tokens."""
    server = start_server(BGDOWNLOAD_TOKENS=TOKENS)
    clients = {
        name: httpx.AsyncClient(
            base_url=server.url, timeout=30,
            headers={"Authorization": f"Bearer token-{name[0]}"},
        )
        for name in ("alice", "bob")
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


async def create(client: httpx.AsyncClient, url: str, **fields: Any) -> str:
    response = await client.post(API, json={"url": url, **fields})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def jobs_of(client: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    return [(await client.get(f"{API}/{job_id}")).json() for job_id in ids]


async def wait_until(client: httpx.AsyncClient, ids: list[str], check: Any,
                     timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll the jobs until ``check(jobs)`` holds; fail after the contract deadline."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await jobs_of(client, ids)
        if check(jobs):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {[j['state'] for j in jobs]}")
        await asyncio.sleep(0.05)


def count(jobs: list[dict[str, Any]], state: str) -> int:
    return sum(job["state"] == state for job in jobs)


async def cancel_all(client: httpx.AsyncClient, ids: list[str]) -> None:
    for job_id in ids:
        await client.post(f"{API}/{job_id}/cancel")


async def test_another_owner_runs_while_one_owner_fills_the_queue_with_slow_jobs(
    owners: dict[str, httpx.AsyncClient], start_worker, source: SourceServer
) -> None:
    """The finding: eight slow jobs of Alice (top priority, max_speed=1) on a two-slot worker."""
    worker: WorkerProcess = start_worker(BGDOWNLOAD_CONCURRENCY="2", BGDOWNLOAD_TOKENS=TOKENS)
    alice, bob = owners["alice"], owners["bob"]
    hers = [
        await create(alice, source.url(f"/bytes/5000000?seed=a{i}"), max_speed=1, priority=1000)
        for i in range(8)
    ]
    await wait_until(alice, hers, lambda jobs: count(jobs, "active") == 1)
    # a 1 KB job of the lowest priority: it needs only the slot Alice may not take
    mine = await create(bob, source.url("/bytes/1000?seed=b"), priority=-1000)
    done = (await wait_until(bob, [mine], lambda jobs: jobs[0]["state"] == "completed",
                             timeout=15))[0]
    assert done["progress"]["loaded"] == 1000
    after = await jobs_of(alice, hers)
    assert (count(after, "active"), count(after, "waiting")) == (1, 7)  # Alice cancelled nothing
    await cancel_all(alice, hers)
    assert "Traceback" not in worker.log()


async def test_the_cap_holds_and_each_owner_gets_its_share_of_a_worker(
    owners: dict[str, httpx.AsyncClient], start_worker, source: SourceServer
) -> None:
    start_worker(BGDOWNLOAD_CONCURRENCY="5", BGDOWNLOAD_OWNER_CONCURRENCY="2",
                 BGDOWNLOAD_TOKENS=TOKENS)
    alice, bob = owners["alice"], owners["bob"]
    hers = [await create(alice, source.url(SLOW + f"a{i}")) for i in range(4)]
    await wait_until(alice, hers, lambda jobs: count(jobs, "active") == 2)
    his = [await create(bob, source.url(SLOW + f"b{i}")) for i in range(3)]
    await wait_until(bob, his, lambda jobs: count(jobs, "active") == 2)
    # a fifth slot is free, yet each owner stays at two
    active = [job for job in await jobs_of(alice, hers) if job["state"] == "active"]
    assert len(active) == 2 and count(await jobs_of(bob, his), "active") == 2
    await alice.post(f"{API}/{active[0]['id']}/cancel")
    await wait_until(alice, hers, lambda jobs: count(jobs, "active") == 2
                     and count(jobs, "cancelled") == 1)
    assert count(await jobs_of(bob, his), "active") == 2
    await cancel_all(alice, hers)
    await cancel_all(bob, his)


async def test_priority_orders_an_owners_jobs_and_owners_take_turns(
    owners: dict[str, httpx.AsyncClient], start_worker, source: SourceServer
) -> None:
    start_worker(BGDOWNLOAD_CONCURRENCY="1", BGDOWNLOAD_TOKENS=TOKENS)
    alice, bob = owners["alice"], owners["bob"]
    blocker = await create(alice, source.url(SLOW + "blocker"))
    await wait_until(alice, [blocker], lambda jobs: jobs[0]["state"] == "active")
    a_low = await create(alice, source.url("/bytes/2000?seed=low"), priority=0)
    a_high = await create(alice, source.url("/bytes/2000?seed=high"), priority=10)
    b_any = await create(bob, source.url("/bytes/2000?seed=bob"), priority=-5)
    await alice.post(f"{API}/{blocker}/cancel")
    await wait_until(alice, [a_low, a_high], lambda jobs: count(jobs, "completed") == 2)
    await wait_until(bob, [b_any], lambda jobs: jobs[0]["state"] == "completed")
    # one slot: the order the source was asked is the order the jobs ran
    seeds = [r.query["seed"] for r in list(source.requests) if r.path == "/bytes/2000"]
    assert list(dict.fromkeys(seeds)) == ["high", "bob", "low"]


async def test_every_job_of_a_capped_owner_runs_one_after_another(
    owners: dict[str, httpx.AsyncClient], start_worker, source: SourceServer
) -> None:
    """Messages that find only Alice's jobs while she is at her cap are kept, not lost."""
    start_worker(BGDOWNLOAD_CONCURRENCY="3", BGDOWNLOAD_OWNER_CONCURRENCY="1",
                 BGDOWNLOAD_TOKENS=TOKENS)
    alice = owners["alice"]
    hers = [
        await create(alice, source.url(f"/bytes/60000?rate=200000&seed=c{i}")) for i in range(4)
    ]
    jobs = await wait_until(alice, hers, lambda jobs: count(jobs, "completed") == 4, timeout=60)
    runs = sorted(
        (datetime.fromisoformat(j["started_at"]), datetime.fromisoformat(j["finished_at"]))
        for j in jobs
    )
    for (_, finished), (started, _) in itertools.pairwise(runs):
        assert started >= finished  # never two of hers at once


async def test_a_message_parked_at_the_cap_moves_to_a_worker_with_room(
    owners: dict[str, httpx.AsyncClient], start_worker, source: SourceServer, redis
) -> None:
    """The first worker read both of Alice's messages but has one place for her; a
    second worker, started later, gets the parked message and runs her other job."""
    first: WorkerProcess = start_worker(BGDOWNLOAD_CONCURRENCY="2", BGDOWNLOAD_TOKENS=TOKENS)
    alice = owners["alice"]
    hers = [await create(alice, source.url(SLOW + f"d{i}")) for i in range(2)]
    await wait_until(alice, hers, lambda jobs: count(jobs, "active") == 1)
    second: WorkerProcess = start_worker(BGDOWNLOAD_CONCURRENCY="2", BGDOWNLOAD_TOKENS=TOKENS)
    await wait_until(alice, hers, lambda jobs: count(jobs, "active") == 2)
    # a lease names its worker: "<worker id> <token>"
    holders = {(await redis.get(keys.lease(job_id))).split(" ")[0] for job_id in hers}
    assert len(holders) == 2
    assert "Traceback" not in first.log() + second.log()
    await cancel_all(alice, hers)
