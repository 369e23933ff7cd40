"""A job's and an owner's event streams (docs/api.md §3): snapshot or replay, then live.

Replay reads the Redis stream after the client's ``Last-Event-ID`` (through the
store); live events come from the hub. Ids are compared so that nothing is
sent twice where the replay and the live subscription overlap, and a
subscription that fell behind starts over from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from bgdownload import keys
from bgdownload.errors import NotFound
from bgdownload.models import Event, JobState
from bgdownload.store import Store, StoreError, is_stream_id, stream_id_key
from bgdownload.store.hub import EventHub, Subscription

#: the most events one replay reads
REPLAY_LIMIT = 10_000
#: how long a live wait goes before checking that the job still exists
LIVE_CHECK = 5.0


async def job_events(
    store: Store, hub: EventHub, job_id: str, last_event_id: str | None
) -> AsyncGenerator[Event, None]:
    """The job's events: replay after ``last_event_id`` or a snapshot, then live.

    Ends after the terminal ``state`` event.
    """
    stream = keys.job_events(job_id)
    async with hub.listening(stream) as sub:
        last = None
        if (
            last_event_id is not None
            and is_stream_id(last_event_id)
            and not await store.lost_after(stream, last_event_id)
        ):
            last = last_event_id
        terminal = False
        if last is None:
            snapshot = await _snapshot(store, job_id)
            yield snapshot
            last, terminal = snapshot.id, JobState(snapshot.data["state"]).terminal
        else:
            replayed = await store.job_events_after(job_id, last, count=REPLAY_LIMIT)
            for event in replayed:
                yield event
                last = event.id
                terminal = _is_terminal_event(event)
            if not replayed:
                # Nothing after the client's id: if the job has ended, the client
                # already saw its last state event, so the stream is over.
                current = await store.get(job_id)
                terminal = current is None or current.state.terminal
        while not terminal:
            event = await _next_live(store, sub, job_id)
            if event.event == "snapshot":
                yield event
                last, terminal = event.id, JobState(event.data["state"]).terminal
                continue
            if stream_id_key(event.id) <= stream_id_key(last):
                continue
            yield event
            last = event.id
            terminal = _is_terminal_event(event)


async def owner_events(
    store: Store, hub: EventHub, owner: str, last_event_id: str | None
) -> AsyncGenerator[Event, None]:
    """Events of all the owner's jobs; replays after ``last_event_id``; never ends."""
    stream = keys.owner_events(owner)
    async with hub.listening(stream) as sub:
        last = await store.last_event_id(stream)
        if last_event_id is not None and is_stream_id(last_event_id):
            if await store.lost_after(stream, last_event_id):
                # Too old to replay: give a snapshot of every job still in motion.
                jobs, _ = await store.list_jobs(
                    owner, states={JobState.WAITING, JobState.ACTIVE, JobState.PAUSED},
                    limit=500,
                )
                for job in jobs:
                    yield Event(last, "snapshot", job.to_public())
            else:
                for event in await store.owner_events_after(
                    owner, last_event_id, count=REPLAY_LIMIT
                ):
                    yield event
                    last = event.id
        while True:
            sub.take_overflow()
            event = await sub.get()
            if stream_id_key(event.id) <= stream_id_key(last):
                continue
            yield event
            last = event.id


async def _snapshot(store: Store, job_id: str) -> Event:
    snap = await store.snapshot(job_id)
    if snap is None:
        raise NotFound(f"no download {job_id}")
    return Event(snap.last_event_id, "snapshot", snap.job.to_public())


async def _next_live(store: Store, sub: Subscription, job_id: str) -> Event:
    while True:
        if sub.take_overflow():
            # The listener fell behind: start over from now.
            return await _snapshot(store, job_id)
        try:
            return await asyncio.wait_for(sub.get(), timeout=LIVE_CHECK)
        except TimeoutError:
            # A job can vanish (deleted, expired) while we wait: end instead of hanging.
            # Redis away for now (a restart) is no reason to end: the hub resumes the
            # stream where it was once Redis is back, so the client stays connected.
            with contextlib.suppress(StoreError, OSError):
                if await store.get(job_id) is None:
                    raise NotFound(f"download {job_id} was deleted") from None


def _is_terminal_event(event: Event) -> bool:
    return event.event == "state" and JobState(event.data["state"]).terminal
