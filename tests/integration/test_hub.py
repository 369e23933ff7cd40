"""The event hub: one reader for many listeners; a slow listener is resynced, not buffered."""

from __future__ import annotations

import asyncio

from bgdownload.models import JobState, Progress
from bgdownload.service import Service
from bgdownload.store.hub import EventHub


async def test_many_listeners_share_one_reader_and_leave_nothing_behind(
    service: Service, redis
) -> None:
    job, _ = await service.create("alice", {"url": "http://127.0.0.1:9/x"})
    streams = [service.job_events("alice", job.id) for _ in range(50)]
    firsts = await asyncio.gather(*(s.__anext__() for s in streams))
    assert {e.event for e in firsts} == {"snapshot"}
    assert service.hub.listener_count == 50
    clients_before = len(await redis.client_list())
    await service.store.transition(job.id, JobState.ACTIVE)
    nexts = await asyncio.gather(*(s.__anext__() for s in streams))
    assert {(e.event, e.data["state"]) for e in nexts} == {("state", "active")}
    assert len(await redis.client_list()) <= clients_before  # no connection per listener
    await asyncio.gather(*(s.aclose() for s in streams))
    assert service.hub.listener_count == 0


async def test_a_listener_that_falls_behind_gets_a_fresh_snapshot(service: Service, redis) -> None:
    service.hub = EventHub(service.store.redis, queue_size=8)
    job, _ = await service.create("alice", {"url": "http://127.0.0.1:9/x"})
    events = service.job_events("alice", job.id)
    assert (await events.__anext__()).event == "snapshot"
    job, _ = await service.store.transition(job.id, JobState.ACTIVE)
    for loaded in range(1, 41):  # far more than the listener's buffer of 8
        job.progress = Progress(loaded * 100, 10_000, 50.0)
        await service.store.publish_progress([(job, 100)])
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.7)  # let the hub's reader deliver (and overflow)
    seen = []
    while True:
        event = await asyncio.wait_for(events.__anext__(), 5)
        seen.append(event)
        if event.event == "snapshot":
            break
    assert len(seen) <= 9, "at most the buffer, then a resync"
    assert seen[-1].data["progress"]["loaded"] == 4000  # the snapshot is current
    await service.store.transition(job.id, JobState.COMPLETED)
    tail = [e async for e in events]
    assert [e.data["state"] for e in tail] == ["completed"]
    await service.hub.close()


async def test_concurrent_first_subscribers_both_hear(redis) -> None:
    """Two listeners subscribing to a new stream at once (job.wait() and its widget)."""
    hub = EventHub(redis, block_ms=100)
    a, b = await asyncio.gather(hub.subscribe("k"), hub.subscribe("k"))
    await redis.xadd("k", {"event": "state", "data": "{}"})
    got = [await asyncio.wait_for(sub.get(), 2) for sub in (a, b)]
    await hub.close()
    assert [e.event for e in got] == ["state", "state"]


async def test_hundreds_of_streams_opening_at_once_wait_for_connections(service: Service) -> None:
    """More streams than pooled connections: they queue for a connection, none fails."""
    service.stream_slots.limit = 200  # one owner's stream cap is not what this is about
    job, _ = await service.create("alice", {"url": "http://127.0.0.1:9/x"})
    streams = [service.job_events("alice", job.id) for _ in range(200)]
    firsts = await asyncio.gather(*(s.__anext__() for s in streams))
    assert len(firsts) == 200 and {e.event for e in firsts} == {"snapshot"}
    await asyncio.gather(*(s.aclose() for s in streams))
