"""The download engine: one attempt of one URL, from a source into ``<name>.part`` → ``<name>``.

:meth:`Engine.fetch` streams the body into ``<name>.part`` next to a sidecar
``<name>.part.json`` that remembers what is needed to continue later: the
validator (ETag or Last-Modified), the total size, how many bytes are durable
and, for parallel ranged downloads, each segment's progress. The next call with
the same ``spec.filename`` resumes: with a validator by a read conditional on it
(``Range`` + ``If-Range``), so a source that changed answers ``200`` and the
download starts over; without one by asking for the last bytes on disk again and
comparing them (:mod:`bgdownload.engine.resume`). Either way two versions are
never spliced together, and only a complete, verified file is promoted to its
final name. An ``OSError`` that says the destination cannot be written becomes a
:class:`bgdownload.errors.StorageError` naming the file, not a bug.
A single-connection download writes its sidecar just before its first batch goes
to disk (2 MiB or 1 s in), then about once a second after syncing the data it
covers, and when the attempt stops early; a small file that arrives whole never
gets one, and a crash before then restarts it from zero, which for so few bytes
costs nothing.

The engine makes exactly one attempt; retrying transient errors
(``DownloadError.transient``) is the runner's job.

This module is the engine's public seam (:class:`Engine` and the types it takes
and returns) and the single-connection download. The bytes come from a source
(:mod:`bgdownload.engine.sources`, picked by the URL's scheme) and go to a storage
(:mod:`bgdownload.storage`, one per download root); the parallel ranged download
is in :mod:`bgdownload.engine.segments`, the writing and hashing threads in
:mod:`bgdownload.engine.writer`, and the per-attempt state and its sidecar in
:mod:`bgdownload.engine.attempt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bgdownload.config import Settings
from bgdownload.engine.attempt import AttemptState, FetchResult, FetchSpec, ProgressSink, Restart
from bgdownload.engine.limiter import TokenBucket, consume_all
from bgdownload.engine.names import choose_filename
from bgdownload.engine.resume import (
    CHANGED,
    IGNORED_RANGE,
    Checkpoints,
    overlap_for,
    read_at,
    take_head,
)
from bgdownload.engine.segments import MIN_SEGMENT, SIDECAR_INTERVAL, SegmentedDownload
from bgdownload.engine.sources import (
    Reply,
    Source,
    raise_for_status,
    resume_guard,
    source_for,
)
from bgdownload.engine.sources.http import MAX_REDIRECTS, HttpSource
from bgdownload.engine.writer import Writer, hash_file
from bgdownload.errors import (
    ChecksumMismatch,
    InvalidURL,
    NetworkError,
    TooLarge,
)
from bgdownload.storage import LOCAL_OWNER, Storage, storage_at
from bgdownload.storage.files import PART_SUFFIX
from bgdownload.storage.names import sanitize_filename

__all__ = [
    "MAX_REDIRECTS",
    "MIN_SEGMENT",
    "SIDECAR_INTERVAL",
    "Engine",
    "FetchResult",
    "FetchSpec",
    "ProgressSink",
]


class Engine:
    """Downloads one URL per :meth:`fetch` call; one instance per worker process.

    >>> engine = Engine(Settings.from_env())
    >>> result = await engine.fetch(FetchSpec(url, root), sink)     # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        worker_limiter: TokenBucket | None = None,
        min_segment: int = MIN_SEGMENT,
        sidecar_interval: float = SIDECAR_INTERVAL,
        threaded_writes: bool = True,
    ) -> None:
        self._settings = settings
        if worker_limiter is None and settings.max_speed:
            worker_limiter = TokenBucket(settings.max_speed)
        self._worker_limiter = worker_limiter
        self._min_segment = min_segment
        self._sidecar_interval = sidecar_interval
        self._threaded_writes = threaded_writes
        http = HttpSource(settings, transport=transport)
        #: the sources by URL scheme (see source_for)
        self._sources: dict[str, Source] = {"http": http, "https": http}
        #: one storage per download root and owner, kept: each resolves its folder once
        self._storages: dict[tuple[Path, str], Storage] = {}

    async def aclose(self) -> None:
        for source in dict.fromkeys(self._sources.values()):
            await source.aclose()

    def storage(self, root: Path, owner: str = LOCAL_OWNER) -> Storage:
        """The storage of ``owner``'s files in the download root ``root``."""
        storage = self._storages.get((root, owner))
        if storage is None:
            storage = self._storages[(root, owner)] = storage_at(root, owner)
        return storage

    def discard(self, root: Path, filename: str, owner: str = LOCAL_OWNER) -> None:
        """Delete ``<filename>.part`` and its sidecar (a cancelled job)."""
        self.storage(root, owner).discard(filename)

    # ------------------------------------------------------------------ one attempt

    async def fetch(self, spec: FetchSpec, sink: ProgressSink) -> FetchResult:
        """Download ``spec.url`` (resuming ``spec.filename`` when given); one attempt."""
        source = source_for(spec.url, self._sources)
        source.check(spec.url)
        state = AttemptState(spec=spec, sink=sink, source=source,
                             storage=self.storage(spec.root, spec.owner))
        limits = [m for m in (spec.max_bytes, self._settings.max_bytes) if m]
        state.max_bytes = min(limits) if limits else None
        buckets: list[TokenBucket] = []
        if spec.max_speed:
            buckets.append(TokenBucket(spec.max_speed))
        if self._worker_limiter is not None:
            buckets.append(self._worker_limiter)
        state.buckets = tuple(buckets)
        try:
            return await self._attempt(state)
        except OSError as exc:
            # The destination refused the bytes: the user's to fix, never a bug or a retry.
            failure = state.storage.storage_error(
                exc, None if state.filename is None else state.filename + PART_SUFFIX)
            if failure is None:
                raise
            if state.filename is not None and not failure.keep_partial:
                state.storage.discard(state.filename)
            raise failure from exc

    async def _attempt(self, state: AttemptState) -> FetchResult:
        spec = state.spec
        if spec.filename is not None:
            if spec.filename != sanitize_filename(spec.filename, fallback=""):
                raise InvalidURL(f"unsafe stored file name {spec.filename!r}")
            state.filename = spec.filename
            state.sidecar_written = True  # an earlier attempt may have left one
            final = state.storage.file_path(spec.filename)
            if final.exists() and not state.part.exists():
                # An earlier attempt finished the rename but died before reporting it.
                return await self._finished(state, final)
            state.load_sidecar()

        for _ in range(3):
            try:
                if state.segments is not None and state.part.exists():
                    return await self._segmented(state).resume()
                return await self._single(state)
            except Restart as restart:
                self._reset(state)
                await state.sink.restarted(restart.note)
        raise NetworkError("the source kept changing while it was downloaded")

    def _reset(self, state: AttemptState) -> None:
        """Forget the partial data: empty ``.part``, no segments, no validator."""
        state.segments = None
        state.validator = {}
        state.total = None
        state.done = None
        state.checks = []
        state.resumable = False
        state.boot = ""
        state.loaded = 0
        if state.filename is not None:
            with open(state.part, "wb"):
                pass
            if state.sidecar_written:
                with contextlib.suppress(FileNotFoundError):
                    state.sidecar.unlink()
                state.sidecar_written = False
        state.sidecar_fresh = False

    async def _single(self, state: AttemptState) -> FetchResult:
        spec = state.spec
        existing = 0
        if state.filename is not None and state.part.exists():
            existing = state.resume_point(state.part.stat().st_size)
        guarded = resume_guard(state.validator) is not None
        # Without a validator, ask again for the last bytes on disk to see it is the same file.
        overlap = 0 if guarded else overlap_for(existing)
        reply = await state.source.open(spec.url, spec.headers, start=existing - overlap,
                                        validator=state.validator)
        try:
            if reply.status == 416 and existing:
                if guarded and reply.total == existing and state.total in (None, existing):
                    return await self._complete_on_disk(state, existing)
                raise Restart(CHANGED)
            raise_for_status(reply)
            offset = 0
            if reply.status == 206:
                if reply.start != existing - overlap:
                    raise Restart(IGNORED_RANGE)
                if overlap:
                    await self._check_overlap(state, reply, existing, overlap)
                offset = existing
            elif existing:
                changed = guarded and reply.validator != state.validator
                await state.sink.restarted(CHANGED if changed else IGNORED_RANGE)
            state.total = total = reply.total
            if state.max_bytes is not None and total is not None and total > state.max_bytes:
                if state.filename is not None:
                    state.storage.discard(state.filename)
                raise TooLarge(f"the file has {total} bytes, more than the cap of "
                               f"{state.max_bytes}")
            if state.filename is None:
                await self._choose_name(state, reply)
            if offset == 0:
                state.validator = reply.validator
            if (spec.connections > 1 and total is not None and offset == 0
                    and reply.status == 200 and reply.ranges
                    and total >= 2 * self._min_segment):
                return await self._segmented(state).start(reply, total)
            if offset:
                state.save_sidecar(done=offset)  # the resumed total may be new; rare, so at once
            return await self._stream_single(state, reply, offset)
        finally:
            await reply.aclose()

    async def _check_overlap(self, state: AttemptState, reply: Reply, existing: int,
                             overlap: int) -> None:
        """The answer's first ``overlap`` bytes must be the disk's last: else the file changed."""
        if reply.total != state.total:
            raise Restart(CHANGED)
        try:
            got = await take_head(reply.body, overlap)
        except state.source.lost as exc:
            raise NetworkError(f"connection lost while resuming: {exc}") from exc
        if got is None:
            raise NetworkError("the source's answer ended before the bytes it was to repeat")
        head, reply.body = got
        if head != await asyncio.to_thread(read_at, state.part, existing - overlap, overlap):
            raise Restart(CHANGED)

    async def _stream_single(self, state: AttemptState, reply: Reply,
                             offset: int) -> FetchResult:
        if offset:
            digest = await asyncio.to_thread(hash_file, state.part, offset)
        else:
            digest = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC)
        fd = os.open(state.part, flags, 0o644)
        writer = Writer(fd, digest, offset, threaded=self._threaded_writes)
        checkpoints = Checkpoints(fd, self._sidecar_interval,
                                  lambda: state.record(writer.written), state.write)
        loaded = offset
        finished = too_large = False
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            os.ftruncate(fd, offset)
            loaded, too_large = await self._receive(state, reply, writer, checkpoints, offset)
            await writer.flush()
            finished = not too_large and (state.total is None or loaded == state.total)
        except state.source.lost as exc:
            # Keep what arrived: the next attempt resumes after it.
            with contextlib.suppress(Exception):
                await writer.flush()
            raise NetworkError(f"connection lost after {writer.written} bytes: {exc}") from exc
        finally:
            writer.settle()
            # Dropped, cut short or cancelled (pause, shutdown): what arrived is on disk
            # now; sync it and record how to resume it. A finished file needs no record.
            record = not finished and not too_large and writer.written > offset
            with contextlib.suppress(OSError):
                checkpoints.finish(record=record)
            os.close(fd)
        if too_large:
            state.storage.discard(state.filename or "")
            raise TooLarge(f"the body passed the cap of {state.max_bytes} bytes")
        if state.total is not None and loaded != state.total:
            raise NetworkError(f"the body ended after {loaded} of {state.total} bytes")
        return await self._complete(state, digest, loaded)

    async def _receive(self, state: AttemptState, reply: Reply, writer: Writer,
                       checkpoints: Checkpoints, offset: int) -> tuple[int, bool]:
        """Stream ``reply``'s body into ``writer``: (bytes loaded, passed the cap?)."""
        loaded, total, cap = offset, state.total, state.max_bytes
        buckets, update = state.buckets, state.sink.update
        update(loaded, total)
        async for chunk in reply.body:
            size = len(chunk)
            if cap is not None and loaded + size > cap:
                return loaded, True
            if buckets:
                await consume_all(buckets, size)
            due = writer.add(chunk)
            loaded += size
            update(loaded, total)  # O(1) by contract: a counter, no I/O
            if due:
                if not state.sidecar_fresh:
                    # Before the first batch reaches the disk: a body that arrives
                    # whole within one batch (small files) never needs a sidecar.
                    state.save_sidecar(done=offset)
                elif checkpoints.due():
                    checkpoints.start()  # sync what is written, then record it
                await writer.submit()
        return loaded, False

    async def _choose_name(self, state: AttemptState, reply: Reply) -> None:
        spec = state.spec
        wished = choose_filename(spec.wished_filename, reply.disposition, reply.url)
        state.filename, part = await state.storage.reserve(wished, self._claim(state))
        state.known_part = (state.filename, part)

    @staticmethod
    def _claim(state: AttemptState) -> Callable[[str], Awaitable[bool]]:
        """Reserve a name for this job through the sink (docs/api.md §17)."""
        async def claim(name: str) -> bool:
            return await state.sink.name_chosen(name, state.storage.path_of(name)) is not False
        return claim

    # ------------------------------------------------------------------ finishing

    async def _complete(self, state: AttemptState, digest: Any, size: int) -> FetchResult:
        spec = state.spec
        assert state.filename is not None
        sha = digest.hexdigest()
        if spec.expected_sha256 and sha.lower() != spec.expected_sha256.strip().lower():
            state.storage.discard(state.filename)
            raise ChecksumMismatch(
                f"sha256 of the download is {sha}, expected {spec.expected_sha256}"
            )
        final_name = await state.storage.promote(state.filename, self._claim(state))
        if state.sidecar_written:
            with contextlib.suppress(FileNotFoundError):
                state.sidecar.unlink()
        return FetchResult(filename=final_name, path=state.storage.path_of(final_name),
                           sha256=sha, size=size)

    async def _complete_on_disk(self, state: AttemptState, size: int) -> FetchResult:
        """The ``.part`` already holds the whole file (the source said nothing is left)."""
        await asyncio.to_thread(os.truncate, state.part, size)
        return await self._complete(state, await asyncio.to_thread(hash_file, state.part),
                                    size)

    async def _finished(self, state: AttemptState, final: Path) -> FetchResult:
        digest = await asyncio.to_thread(hash_file, final)
        sha = digest.hexdigest()
        spec = state.spec
        if spec.expected_sha256 and sha.lower() != spec.expected_sha256.strip().lower():
            raise ChecksumMismatch(f"sha256 of {final.name} is {sha}, "
                                   f"expected {spec.expected_sha256}")
        size = (await asyncio.to_thread(final.stat)).st_size
        state.sink.update(size, size)
        assert state.filename is not None
        return FetchResult(filename=state.filename, path=state.storage.path_of(state.filename),
                           sha256=sha, size=size)

    # ------------------------------------------------------------------ segments

    def _segmented(self, state: AttemptState) -> SegmentedDownload:
        """The parallel ranged download of ``state``; finishing stays here."""
        return SegmentedDownload(state, complete=self._complete,
                                 min_segment=self._min_segment,
                                 sidecar_interval=self._sidecar_interval,
                                 threaded_writes=self._threaded_writes)
