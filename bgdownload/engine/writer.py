"""Getting received bytes onto disk and into the digest, off the event loop.

:class:`Writer` batches a response's chunks and hands each batch to two ordered
lanes (:class:`Lane`) on a shared thread pool, one writing and one hashing, so
that receiving, writing and hashing overlap; :func:`hash_file` hashes what an earlier
attempt already left on disk.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgdownload.engine.attempt import Segment

_HASH_BLOCK = 1024 * 1024
#: bytes handed to the write and hash threads at a time (see Writer)
_BATCH = 2 * 1024 * 1024
#: chunks in one batch at most (bounds the per-chunk work a batch hands over)
_MAX_CHUNKS = 512
#: bytes per write call at most (see pwrite_all)
_WRITE_PIECE = 256 * 1024
#: seconds a received chunk waits in memory at most before it is written
_BATCH_AGE = 1.0
#: a body no larger than this that arrives within one batch is written and hashed on
#: the event loop (tens of microseconds) instead of in the pool threads
_INLINE_BODY = 256 * 1024
#: batches queued per stage (writing, hashing) before the event loop waits
_DEPTH = 2
#: threads that write and hash downloaded bytes (GIL released in both)
_WRITE_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="bgd-write")
Chunk = bytes | memoryview


def hash_file(path: Path, length: int | None = None) -> hashlib._Hash:
    """SHA-256 of the first ``length`` bytes of ``path`` (all of it when None)."""
    digest = hashlib.sha256()
    remaining = length
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            block = f.read(_HASH_BLOCK if remaining is None else min(_HASH_BLOCK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest


def pwrite_all(fd: int, chunks: list[Chunk], offset: int) -> None:
    """Write ``chunks`` back to back at ``offset``: one call per chunk, split at
    ``_WRITE_PIECE``.

    Not one ``pwritev`` per batch: large aligned writes make the kernel back the page
    cache with large folios, and on this VM fresh high-order pages are expensive (a
    1 GiB download spent ~2 s of system time instead of ~0.8 s with 2 MiB
    ``pwritev`` calls; benchmarks/README.md). Received chunks land at unaligned
    offsets and get small, recycled pages, as curl's writes do.
    """
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            written = os.pwrite(fd, view[:_WRITE_PIECE], offset)
            if written <= 0:
                raise OSError(errno.ENOSPC, "no progress writing the download")
            offset += written
            view = view[written:]


def hash_all(digest: Any, chunks: list[Chunk]) -> None:
    for chunk in chunks:
        digest.update(chunk)  # releases the GIL for anything over 2 KiB


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Lane:
    """Runs jobs one at a time and in order on the shared pool, off the event loop.

    A job queued behind a running one starts on the same pool thread as soon as the
    first ends — no trip through the event loop between batches, so a thread that
    is the slowest stage never idles waiting for the loop to hand it the next
    batch. The loop only waits (:meth:`until`) while ``_DEPTH`` jobs are queued,
    which bounds the memory they hold. A failing job stops the lane: later jobs are
    dropped (a write after a failed one would leave a hole that a resume reads as
    data) and the error is raised to the loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._drainer: concurrent.futures.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None

    def put(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._drainer is None:
                self._drainer = _WRITE_POOL.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._drainer = None
                    return
                job = self._jobs[0]
            if self.error is None:
                try:
                    job()
                except BaseException as exc:  # handed to the loop by until()
                    self.error = exc
            with self._lock:
                self._jobs.popleft()
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                # Only when the loop is actually waiting: one wake-up per wait.
                with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                    waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    async def until(self, queued: int) -> None:
        """Wait until at most ``queued`` jobs are left; raise a job's error."""
        while True:
            if self.error is not None:
                raise self.error
            with self._lock:
                if len(self._jobs) <= queued:
                    return
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    def settle(self) -> bool:
        """Block until every queued job ran (on any exit path); False if one failed."""
        while True:
            with self._lock:
                drainer = self._drainer
            if drainer is None:
                return self.error is None
            with contextlib.suppress(Exception):
                drainer.result()


class Writer:
    """Writes and hashes received chunks in batches, off the event loop.

    Where the time goes on a 1 GiB loopback download (benchmarks/README.md): copying
    into page-cache pages (0.3-1 s/GiB on this VM, the widest spread), SHA-256
    (~0.62 s/GiB) and the event loop receiving (~0.75 s/GiB) are about the same
    size. Each runs on a thread of its own — writing and hashing both release the
    GIL — so on two cores they overlap instead of adding up. Chunks are collected
    into ``batch``-byte batches: one hand-off per stage per batch, not per chunk
    (fewer GIL hand-overs and loop wake-ups). Each stage is a :class:`Lane` holding
    at most ``_DEPTH`` batches, which bounds memory at about ``_DEPTH + 1`` batches
    and keeps the hash in order.

    Tried and dropped: copying a batch into one contiguous buffer so the hash thread
    makes one ``update`` per batch (its GIL waits shrank, but the copy on the loop
    thread — the busiest — cost more: 1.5 s vs 1.35 s per GiB), and writing on the
    loop with only hashing in a thread (same median, loop blocked by disk writes);
    hashing each batch read back from the page cache in one ``preadv`` + one
    ``update`` (the hash must then wait for the write: slower).
    """

    def __init__(self, fd: int, digest: Any | None, position: int, *,
                 segment: Segment | None = None, batch: int = _BATCH,
                 threaded: bool = True) -> None:
        self._fd = fd
        self._digest = digest
        self._position = position  # file offset of the next batch
        self._start = position
        #: the file offset up to which every byte was written (read by checkpoints)
        self.written = position
        self._segment = segment
        self._batch_limit = batch
        self._threaded = threaded
        self._chunks: list[Chunk] = []
        self._size = 0
        self._since = 0.0
        self._writes = Lane()
        self._hashes = Lane()

    def add(self, data: Chunk) -> bool:
        """Queue ``data`` (O(1)); True when the batch is due and :meth:`submit` must run.

        A batch is due when full, when it holds ``_MAX_CHUNKS`` chunks, or when its
        first chunk waited ``_BATCH_AGE`` s (a slow source still gets its bytes onto
        disk, and resumable, every second or so).
        """
        chunks = self._chunks
        if not chunks:
            self._since = time.monotonic()
        chunks.append(data)
        self._size += len(data)
        return (self._size >= self._batch_limit or len(chunks) >= _MAX_CHUNKS
                or time.monotonic() - self._since >= _BATCH_AGE)

    def _take(self) -> tuple[list[Chunk], int]:
        chunks, position = self._chunks, self._position
        self._position += self._size
        self._chunks, self._size = [], 0
        return chunks, position

    def _write(self, chunks: list[Chunk], position: int) -> None:
        pwrite_all(self._fd, chunks, position)
        # Only written bytes go into the sidecar; the lane keeps batches in order.
        self.written = position + sum(len(c) for c in chunks)
        if self._segment is not None:
            self._segment.durable = self.written

    async def submit(self) -> None:
        """Hand the filling batch to the lanes, first waiting for room in them."""
        if not self._chunks:
            return
        digest = self._digest
        if not self._threaded:
            chunks, position = self._take()
            self._write(chunks, position)
            if digest is not None:
                hash_all(digest, chunks)
            return
        await self._writes.until(_DEPTH - 1)
        if digest is not None:
            await self._hashes.until(_DEPTH - 1)
        # No await from taking the batch to queueing it: a cancellation leaves the
        # batch either in self._chunks or in the lanes, and settle() writes both.
        chunks, position = self._take()
        self._writes.put(lambda: self._write(chunks, position))
        if digest is not None:
            self._hashes.put(lambda: hash_all(digest, chunks))

    async def flush(self) -> None:
        if self._position == self._start and self._size <= _INLINE_BODY:
            # The whole body is this one small batch (a small file): writing and
            # hashing it here costs less than the two thread hand-offs and loop wake-ups.
            chunks, position = self._take()
            self._write(chunks, position)
            if self._digest is not None:
                hash_all(self._digest, chunks)
            return
        await self.submit()
        await self._writes.until(0)
        await self._hashes.until(0)

    def settle(self) -> None:
        """Write out everything received, whatever happened (before closing the fd).

        Runs on cancellation too: bytes already counted as received reach the disk,
        so the next attempt continues exactly after them. Blocks for at most about
        ``_DEPTH`` batches of writes. The digest is not completed: an attempt that
        did not finish re-hashes its ``.part`` from disk when it resumes.
        """
        writes_ok = self._writes.settle()
        self._hashes.settle()
        chunks, position = self._take()
        if chunks and writes_ok:
            with contextlib.suppress(OSError):
                self._write(chunks, position)
