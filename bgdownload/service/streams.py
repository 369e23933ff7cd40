"""A job's and an owner's event streams (docs/api.md §3): snapshot or replay, then live.

Replay reads the Redis stream after the client's ``Last-Event-ID`` (through the
store) in pages of :data:`REPLAY_PAGE`, so a client replaying a long history
holds one page at a time, not the history; live events come from the hub. Ids
are compared so that nothing is sent twice where the replay and the live
subscription overlap, and a subscription that fell behind starts over from a
fresh snapshot (a job's stream) or from Redis (an owner's stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable

from bgdownload import keys
from bgdownload.errors import InvalidRequest, NotFound, RateLimited
from bgdownload.models import Event, JobState
from bgdownload.store import Store, StoreError, stream_id_key
from bgdownload.store.hub import EventHub, Subscription

#: events one replay read holds (``XRANGE … COUNT``)
REPLAY_PAGE = 200
_EVENT_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_U64 = 2**64 - 1

#: reads the events of a stream after an id, at most ``count``
ReadAfter = Callable[[str, int], Awaitable[list[Event]]]


#: what a client over the stream cap is told to wait: streams end when their clients leave
STREAM_RETRY_AFTER = 5.0


class StreamSlots:
    """Open event streams per owner on this process, capped (docs/api.md §17).

    The count is this process's: behind a load balancer with N server
    processes one owner may hold up to N times the cap.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def hold(self, owner: str, events: AsyncGenerator[Event, None]) -> HeldStream:
        """``events`` counted against ``owner`` until closed; 429 when the owner is at the cap."""
        if self.open.get(owner, 0) >= self.limit:
            raise RateLimited(
                f"{self.limit} event streams are open for this owner already; "
                "close one or retry later",
                retry_after=STREAM_RETRY_AFTER,
            )
        self.open[owner] = self.open.get(owner, 0) + 1
        return HeldStream(events, lambda: self._release(owner))

    def _release(self, owner: str) -> None:
        left = self.open.get(owner, 0) - 1
        if left > 0:
            self.open[owner] = left
        else:
            self.open.pop(owner, None)


class HeldStream:
    """An event iterator that gives its slot back when closed, or when dropped unstarted
    (an adapter whose client left before the body began never iterates it)."""

    def __init__(self, events: AsyncGenerator[Event, None], release: Callable[[], None]) -> None:
        self._events = events
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> Event:
        return await anext(self._events)

    async def aclose(self) -> None:
        self._give_back()
        await self._events.aclose()

    def _give_back(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        self._give_back()


def check_event_id(text: str) -> str:
    """A ``Last-Event-ID`` as Redis writes stream ids (``<ms>-<seq>``, each below 2^64),
    or :class:`InvalidRequest`."""
    found = _EVENT_ID.fullmatch(text)
    if found is None or any(int(part or 0) > _U64 for part in found.groups()):
        shown = ascii(text)[1:-1][:48]
        raise InvalidRequest(f"Last-Event-ID {shown!r} is not an event id this server gave out")
    return text


async def _not_after_now(store: Store, stream: str, last_event_id: str) -> str:
    """An id from the future (another server's, or made up) means "now": replay nothing,
    and do not skip the live events that will come."""
    latest = await store.last_event_id(stream)
    return min(last_event_id, latest, key=stream_id_key)


async def replay(read: ReadAfter, after: str) -> AsyncGenerator[Event, None]:
    """Every event after ``after``, read a page at a time."""
    while True:
        page = await read(after, REPLAY_PAGE)
        for event in page:
            yield event
        if len(page) < REPLAY_PAGE:
            return
        after = page[-1].id
#: how long a live wait goes before checking that the job still exists
LIVE_CHECK = 5.0


async def job_events(
    store: Store, hub: EventHub, job_id: str, last_event_id: str | None
) -> AsyncGenerator[Event, None]:
    """The job's events: replay after ``last_event_id`` or a snapshot, then live.

    Ends after the terminal ``state`` event.
    """
    stream = keys.job_events(job_id)
    if last_event_id is not None:
        check_event_id(last_event_id)
    async with hub.listening(stream) as sub:
        last = None
        if last_event_id is not None and not await store.lost_after(stream, last_event_id):
            last = await _not_after_now(store, stream, last_event_id)
        terminal = False
        if last is None:
            snapshot = await _snapshot(store, job_id)
            yield snapshot
            last, terminal = snapshot.id, JobState(snapshot.data["state"]).terminal
        else:
            replayed = False
            read = _reader(store.job_events_after, job_id)
            async for event in replay(read, last):
                yield event
                last, replayed = event.id, True
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
    if last_event_id is not None:
        check_event_id(last_event_id)
    read = _reader(store.owner_events_after, owner)
    async with hub.listening(stream) as sub:
        last = await store.last_event_id(stream)
        if last_event_id is not None:
            if await store.lost_after(stream, last_event_id):
                # Too old to replay: give a snapshot of every job still in motion.
                jobs, _ = await store.list_jobs(
                    owner, states={JobState.WAITING, JobState.ACTIVE, JobState.PAUSED},
                    limit=500,
                )
                for job in jobs:
                    yield Event(last, "snapshot", job.to_public())
            else:
                async for event in replay(read, await _not_after_now(store, stream,
                                                                     last_event_id)):
                    yield event
                    last = event.id
        while True:
            if sub.take_overflow():
                # fell behind the hub: what it dropped is still in Redis
                async for event in replay(read, last):
                    yield event
                    last = event.id
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


def _reader(
    read: Callable[..., Awaitable[list[Event]]], name: str
) -> ReadAfter:
    async def after(after_id: str, count: int) -> list[Event]:
        return await read(name, after_id, count=count)

    return after


def _is_terminal_event(event: Event) -> bool:
    return event.event == "state" and JobState(event.data["state"]).terminal
