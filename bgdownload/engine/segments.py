"""The segmented download: one file over several ranged connections at once.

A fresh download is split into up to ``spec.connections`` segments of at least
``min_segment`` bytes, written in place into a ``.part`` preallocated to the full
size. Each connection (a lane) downloads its segment, then queued ones, then steals
the larger half of the biggest tail still left. Every ``sidecar_interval`` seconds
the ``.part`` is synced and each segment's durable offset goes into the sidecar,
so a later attempt resumes every segment where its bytes on disk end. A source
that changed meanwhile restarts the download from zero: the ``If-Range`` of a
segment answered with ``200``, a different total size, or — without a validator —
a segment's overlap (:mod:`bgdownload.engine.resume`) that differs from the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from bgdownload.engine.attempt import AttemptState, FetchResult, Restart, Segment
from bgdownload.engine.limiter import consume_all
from bgdownload.engine.resume import (
    CHANGED,
    DAMAGED,
    IGNORED_RANGE,
    Checkpoints,
    digest_of,
    overlap_for,
    read_at,
    take_head,
)
from bgdownload.engine.sources import Reply, raise_for_status, resume_guard
from bgdownload.engine.writer import Writer, hash_file
from bgdownload.errors import NetworkError

#: segments smaller than this are not worth a connection of their own
MIN_SEGMENT = 4 * 1024 * 1024
#: how often segment offsets are written to the sidecar while bytes move
SIDECAR_INTERVAL = 1.0

#: verify the digest and rename the ``.part`` into place (Engine._complete)
Completer = Callable[[AttemptState, Any, int], Awaitable[FetchResult]]


class SegmentedDownload:
    """Downloads ``state``'s file over parallel ranged connections; one per attempt.

    Reads through ``state.source``; finishing a verified file stays the engine's job
    (``complete``).
    """

    def __init__(self, state: AttemptState, *, complete: Completer,
                 min_segment: int = MIN_SEGMENT, sidecar_interval: float = SIDECAR_INTERVAL,
                 threaded_writes: bool = True) -> None:
        self._state = state
        self._complete = complete
        self._min_segment = min_segment
        self._sidecar_interval = sidecar_interval
        self._threaded_writes = threaded_writes

    async def start(self, first: Reply, total: int) -> FetchResult:
        """Split a fresh download into ranged segments; ``first`` feeds segment 0."""
        state = self._state
        count = max(1, min(state.spec.connections, total // self._min_segment))
        size = -(-total // count)
        state.segments = [Segment(i * size, min(total, (i + 1) * size), i * size)
                          for i in range(count)]
        fd = os.open(state.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, total)
        finally:
            os.close(fd)
        state.save_sidecar()
        return await self._run(first)

    async def resume(self) -> FetchResult:
        state = self._state
        assert state.segments is not None and state.total is not None
        if state.part.stat().st_size != state.total:
            raise Restart(DAMAGED)
        return await self._run(None)

    async def _run(self, first: Reply | None) -> FetchResult:
        state = self._state
        assert state.segments is not None and state.total is not None
        total = state.total
        state.loaded = sum(s.pos - s.start for s in state.segments)
        state.sink.update(state.loaded, total)
        fd = os.open(state.part, os.O_WRONLY)
        checkpoints = Checkpoints(fd, self._sidecar_interval, state.record, state.write)
        stop = asyncio.Event()

        async def saver() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._sidecar_interval)
                if not stop.is_set():
                    await checkpoints.run()

        pending = [s for s in state.segments if s.remaining]
        lanes = min(state.spec.connections, max(1, len(pending)))
        queue = list(pending)
        if first is not None and queue and queue[0].pos == 0:
            head = queue.pop(0)
            starters = [self._lane(fd, queue, head, first)]
        else:
            if first is not None:
                await first.aclose()
            starters = []
        while len(starters) < lanes and queue:
            starters.append(self._lane(fd, queue, queue.pop(0), None))
        saver_task = asyncio.create_task(saver())
        try:
            async with asyncio.TaskGroup() as group:
                for lane in starters:
                    group.create_task(lane)
        except* Restart as eg:
            raise eg.exceptions[0] from None
        except* Exception as eg:
            # One lane's failure cancels the others; report the first cause plainly.
            raise eg.exceptions[0] from None
        finally:
            stop.set()
            with contextlib.suppress(Exception):  # a full disk shows in the writes too
                await saver_task
            with contextlib.suppress(OSError):
                checkpoints.finish()  # before the fd closes: sync, record every offset
            os.close(fd)
        if state.loaded != total or any(s.remaining for s in state.segments):
            raise NetworkError(f"segments ended after {state.loaded} of {total} bytes")
        await asyncio.to_thread(self._verify_checks)
        digest = await asyncio.to_thread(hash_file, state.part)
        return await self._complete(state, digest, total)

    def _verify_checks(self) -> None:
        """The overlaps of segments that started where nothing was on disk yet."""
        state = self._state
        for offset, length, digest in state.checks:
            if digest_of(read_at(state.part, offset, length)) != digest:
                raise Restart(CHANGED)

    async def _lane(self, fd: int, queue: list[Segment], segment: Segment,
                    response: Reply | None) -> None:
        """One connection: download ``segment``, then queued ones, then steal the largest tail."""
        current: Segment | None = segment
        while current is not None:
            await self._segment(fd, current, response)
            response = None
            current = queue.pop(0) if queue else self._steal()

    def _steal(self) -> Segment | None:
        state = self._state
        assert state.segments is not None
        victim = max(state.segments, key=lambda s: s.remaining)
        # Splitting a small tail costs a new request for little gain.
        if victim.remaining < 2 * max(self._min_segment // 4, 256 * 1024):
            return None
        middle = victim.pos + victim.remaining // 2
        stolen = Segment(middle, victim.end, middle)
        victim.end = middle
        state.segments.append(stolen)
        return stolen

    async def _open(self, seg: Segment) -> Reply:
        """Ask for the rest of ``seg``; without a validator, with an overlap to check."""
        state = self._state
        overlap = 0 if resume_guard(state.validator) else overlap_for(seg.pos)
        ask = seg.pos - overlap
        response = await state.source.open(state.spec.url, state.spec.headers, start=ask,
                                           end=seg.end, validator=state.validator)
        try:
            if response.status == 200:  # the source changed or stopped honouring ranges
                changed = bool(state.validator) and response.validator != state.validator
                raise Restart(CHANGED if changed else IGNORED_RANGE)
            raise_for_status(response)
            if response.status != 206 or response.start != ask:
                raise Restart(IGNORED_RANGE)
            if response.total != state.total:
                raise Restart(CHANGED)
            if overlap:
                await self._check_overlap(seg, response, ask, overlap)
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _check_overlap(self, seg: Segment, response: Reply, ask: int,
                             overlap: int) -> None:
        """Compare the repeated bytes now if they are ``seg``'s own, else once all are on disk."""
        state = self._state
        try:
            got = await take_head(response.body, overlap)
        except state.source.lost as exc:
            raise NetworkError(f"a connection was lost at byte {ask}: {exc}") from exc
        if got is None:
            raise NetworkError(f"a segment ended before byte {seg.pos}")
        head, response.body = got
        if ask >= seg.start:  # this segment's bytes from an earlier attempt
            if head != await asyncio.to_thread(read_at, state.part, ask, overlap):
                raise Restart(CHANGED)
        else:
            state.checks.append((ask, overlap, digest_of(head)))

    async def _segment(self, fd: int, seg: Segment, response: Reply | None) -> None:
        state = self._state
        if not seg.remaining:
            if response is not None:
                await response.aclose()
            return
        if response is None:
            response = await self._open(seg)
        buckets, update, total = state.buckets, state.sink.update, state.total
        writer = Writer(fd, None, seg.pos, segment=seg, threaded=self._threaded_writes)
        try:
            async for chunk in response.body:
                if buckets:
                    await consume_all(buckets, len(chunk))
                # The tail of this segment may have been stolen meanwhile; no await
                # from here until seg.pos moves, so a steal never splits taken bytes.
                take = min(len(chunk), seg.end - seg.pos)
                if take <= 0:
                    break
                due = writer.add(memoryview(chunk)[:take] if take < len(chunk) else chunk)
                seg.pos += take
                state.loaded += take
                update(state.loaded, total)
                if due:
                    await writer.submit()
                if seg.pos >= seg.end:
                    break
            await writer.flush()
        except state.source.lost as exc:
            with contextlib.suppress(Exception):
                await writer.flush()
            raise NetworkError(f"a connection was lost at byte {seg.pos}: {exc}") from exc
        finally:
            writer.settle()
            await response.aclose()
        if seg.remaining:
            raise NetworkError(f"a segment ended early at byte {seg.pos} of {seg.end}")
