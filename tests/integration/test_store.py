"""The job store on a real Redis: atomic transitions with events, paging, leases, limits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgdownload import keys
from bgdownload.errors import IllegalTransition, RateLimited
from bgdownload.models import TRANSITIONS, Job, JobState, Progress
from bgdownload.store import Store

OPS = st.lists(
    st.one_of(
        st.sampled_from(list(JobState)).map(lambda s: ("to", s)),
        st.integers(min_value=0, max_value=10_000).map(lambda n: ("progress", n)),
    ),
    min_size=1,
    max_size=25,
)


def new_job(owner: str = "alice", **kw: object) -> Job:
    return Job(id=str(uuid.uuid4()), owner=owner, url="http://example.org/f", **kw)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_no_sequence_breaks_the_state_machine_or_the_stream(redis_server: str, ops: list) -> None:
    async def run() -> None:
        redis = aioredis.from_url(redis_server, decode_responses=True)
        store = Store(redis, retention=60)
        job, _ = await store.create(new_job())
        state = JobState.WAITING
        for op, arg in ops:
            if op == "to":
                if arg in TRANSITIONS[state]:
                    job, _ = await store.transition(job.id, arg)
                    state = arg
                else:
                    with pytest.raises(IllegalTransition):
                        await store.transition(job.id, arg)
            else:
                job.progress = Progress(arg, 10_000, 1.0)
                written = await store.publish_progress([(job, 1)])
                assert (written[0] is not None) == (state is JobState.ACTIVE)
            stored = await store.get(job.id)
            assert stored is not None and stored.state is state
            events = await store.job_events_after(job.id, "0-0")
            last_state = [e for e in events if e.event == "state"][-1]
            assert last_state.data["state"] == state.value
            if events[-1].event == "progress":
                assert events[-1].data["loaded"] == stored.progress.loaded
            owner_ids = [e.id for e in await store.owner_events_after("alice", "0-0")]
            assert [e.id for e in events] == [i for i in owner_ids if i in {e.id for e in events}]
            ttl = await redis.ttl(keys.job(job.id))
            assert (ttl > 0) == state.terminal
        await redis.flushall()
        await redis.aclose()

    asyncio.run(run())


async def test_paging_returns_every_job_once_newest_first(redis) -> None:
    store = Store(redis)
    made = []
    for i in range(23):
        job, _ = await store.create(new_job(metadata={"i": i}))
        made.append(job.id)
    await store.create(new_job(owner="bob"))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await store.list_jobs("alice", limit=5, cursor=cursor)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    created = [(await store.get(i)).created_at for i in seen]  # type: ignore[union-attr]
    assert created == sorted(created, reverse=True)


async def test_state_filter_and_expired_jobs_drop_out(redis) -> None:
    store = Store(redis, retention=1)
    a, _ = await store.create(new_job())
    b, _ = await store.create(new_job())
    await store.transition(a.id, JobState.ACTIVE)
    page, _ = await store.list_jobs("alice", states={JobState.ACTIVE})
    assert [j.id for j in page] == [a.id]
    await store.transition(b.id, JobState.CANCELLED)
    await asyncio.sleep(2.2)
    page, _ = await store.list_jobs("alice")
    assert [j.id for j in page] == [a.id]
    assert await redis.zscore(keys.owner_jobs("alice"), b.id) is None


async def test_idempotency_key_returns_the_first_job(redis) -> None:
    store = Store(redis)
    first, created = await store.create(new_job(), idempotency_key="k")
    again, created_again = await store.create(new_job(), idempotency_key="k")
    other_owner, created_other = await store.create(new_job(owner="bob"), idempotency_key="k")
    assert created and not created_again and again.id == first.id
    assert created_other and other_owner.id != first.id
    assert 0 < await redis.ttl(keys.idempotency("alice", "k")) <= 86400


async def claimed(store: Store, task_id: str) -> str | None:
    """The id of the job a queue message claims (its lease and job are other tests' concern)."""
    found = await store.claim_and_lease(task_id, uuid.uuid4().hex, 5)
    return found[0] if found else None


async def test_queue_serves_priority_then_age_and_remembers_the_pick(redis) -> None:
    store = Store(redis)
    old, _ = await store.create(new_job())
    urgent, _ = await store.create(new_job(priority=5))
    young, _ = await store.create(new_job())
    assert await claimed(store, "m1") == urgent.id
    assert await claimed(store, "m1") == urgent.id  # a redelivery resumes the same job
    assert await claimed(store, "m2") == old.id
    await store.transition(young.id, JobState.PAUSED)  # paused jobs leave the queue
    assert await claimed(store, "m3") is None


async def test_lease_is_exclusive_and_renewable(redis) -> None:
    store = Store(redis)
    assert await store.acquire_lease("j", "a", 5)
    assert not await store.acquire_lease("j", "b", 5)
    assert await store.renew_leases([("j", "a")], 5) == [True]
    assert await store.renew_leases([("j", "b")], 5) == [False]
    await store.release_lease("j", "b")
    assert not await store.acquire_lease("j", "b", 5)
    await store.release_lease("j", "a")
    assert await store.acquire_lease("j", "b", 5)


async def test_rate_limit_allows_the_budget_then_says_when(redis) -> None:
    store = Store(redis)
    for _ in range(3):
        assert (await store.create(new_job(), rate=(3, 60)))[1]
    with pytest.raises(RateLimited) as limited:
        await store.create(new_job(), rate=(3, 60))
    assert 0 < limited.value.retry_after <= 20.5
    assert (await store.create(new_job(owner="bob"), rate=(3, 60)))[1]


async def test_secret_fields_are_stored_but_never_public(redis) -> None:
    store = Store(redis)
    job, _ = await store.create(new_job(headers={"Cookie": "s=1"}, expected_sha256="a" * 64))
    stored = await store.get(job.id)
    assert stored is not None and stored.headers == {"Cookie": "s=1"}
    events = await store.job_events_after(job.id, "0-0")
    assert "Cookie" not in repr(events) and "headers" not in stored.to_public()


async def test_jobs_created_in_one_millisecond_list_in_creation_order(redis) -> None:
    store = Store(redis)
    same_moment = new_job().created_at
    made = []
    for _ in range(5):
        job, _ = await store.create(new_job(created_at=same_moment))
        made.append(job.id)
    page, _ = await store.list_jobs("alice")
    assert [j.id for j in page] == list(reversed(made))
    first, cursor = await store.list_jobs("alice", limit=2)
    rest, _ = await store.list_jobs("alice", limit=10, cursor=cursor)
    assert [j.id for j in first + rest] == list(reversed(made))


async def test_leases_renew_in_one_batch(redis) -> None:
    store = Store(redis)
    assert await store.acquire_lease("a", "ta", 5)
    assert await store.acquire_lease("b", "tb", 5)
    assert await store.renew_leases([("a", "ta"), ("b", "wrong"), ("c", "tc")], 9) == [
        True, False, False,
    ]
    assert 5000 < await redis.pttl(keys.lease("a")) <= 9000
    assert await store.renew_leases([], 9) == []
