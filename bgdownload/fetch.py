"""The download engine: one attempt of one URL into ``<root>/<name>.part`` → ``<name>``.

:meth:`Engine.fetch` streams the body into ``<name>.part`` next to a sidecar
``<name>.part.json`` that remembers what is needed to continue later: the
validator (ETag or Last-Modified), the total size and, for parallel ranged
downloads, each segment's progress. The next call with the same
``spec.filename`` resumes with ``Range`` + ``If-Range``, so a source that changed
in between answers ``200`` and the download starts over instead of splicing two
versions together. Only a complete, verified file is renamed into place.
A single-connection download writes its sidecar just before its first batch goes
to disk (2 MiB or 1 s in) or when the attempt stops early, so a small file that
arrives whole never gets one; a crash before then restarts it from zero (no
validator, no resume), which for so few bytes costs nothing.

The engine makes exactly one attempt; retrying transient errors
(``DownloadError.transient``) is the runner's job.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import email.utils
import errno
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from bgdownload.config import Settings
from bgdownload.errors import (
    ChecksumMismatch,
    HTTPStatusError,
    InvalidURL,
    NetworkError,
    TooLarge,
)
from bgdownload.limiter import TokenBucket, consume_all
from bgdownload.safety import (
    PART_SUFFIX,
    check_literal_host,
    choose_filename,
    part_path,
    reserve_unique_name,
    safe_path,
    sanitize_filename,
    sidecar_path,
    validate_url,
)
from bgdownload.transport import GuardedTransport

MAX_REDIRECTS = 10
#: segments smaller than this are not worth a connection of their own
MIN_SEGMENT = 4 * 1024 * 1024
#: how often segment offsets are written to the sidecar while bytes move
SIDECAR_INTERVAL = 1.0
_HASH_BLOCK = 1024 * 1024
#: bytes handed to the write and hash threads at a time (see _Writer)
_BATCH = 2 * 1024 * 1024
#: chunks in one batch at most (bounds the per-chunk work a batch hands over)
_MAX_CHUNKS = 512
#: bytes per write call at most (see _pwrite_all)
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
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


@dataclass
class FetchSpec:
    """What to download and under which constraints."""

    url: str
    root: Path
    #: name already chosen on disk by an earlier attempt (resume): reused as is
    filename: str | None = None
    #: the caller's wish; else Content-Disposition; else the URL path
    wished_filename: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expected_sha256: str | None = None
    max_bytes: int | None = None
    #: bytes/s cap of this job (the worker-wide cap applies on top)
    max_speed: int | None = None
    connections: int = 1


class ProgressSink(Protocol):
    def update(self, loaded: int, total: int | None) -> None:
        """Called per chunk: must be O(1) and do no I/O."""

    async def name_chosen(self, filename: str, path: str) -> None:
        """The file name was picked; persisted before any byte is written."""


@dataclass
class FetchResult:
    filename: str
    path: str
    sha256: str
    size: int


@dataclass
class _Segment:
    start: int
    end: int  # exclusive; may shrink when another connection steals the tail
    pos: int  # next byte to receive
    #: bytes before this offset are on disk; only this goes into the sidecar, so a
    #: crash never records bytes that were still in memory
    durable: int = -1

    def __post_init__(self) -> None:
        if self.durable < 0:
            self.durable = self.pos

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.pos)


class _Restart(Exception):
    """The source changed (or ignores ranges) under a resume: start over from zero."""


@dataclass
class _State:
    """Everything one attempt knows about the file it writes."""

    spec: FetchSpec
    sink: ProgressSink
    filename: str | None = None
    validator: dict[str, str] = field(default_factory=dict)
    total: int | None = None
    segments: list[_Segment] | None = None
    loaded: int = 0
    buckets: tuple[TokenBucket, ...] = ()
    max_bytes: int | None = None
    #: a sidecar may exist on disk (written by this attempt or an earlier one)
    sidecar_written: bool = False
    #: the sidecar describes the response being streamed now (its validator and total)
    sidecar_fresh: bool = False
    #: (filename, path) of the ``.part`` and the sidecar: safe_path resolves every
    #: component (a syscall each), so once per name and, where it can, off the loop
    known_part: tuple[str, Path] | None = None
    known_sidecar: tuple[str, Path] | None = None

    @property
    def part(self) -> Path:
        assert self.filename is not None
        if self.known_part is None or self.known_part[0] != self.filename:
            self.known_part = (self.filename, part_path(self.spec.root, self.filename))
        return self.known_part[1]

    @property
    def sidecar(self) -> Path:
        assert self.filename is not None
        if self.known_sidecar is None or self.known_sidecar[0] != self.filename:
            self.known_sidecar = (self.filename, sidecar_path(self.spec.root, self.filename))
        return self.known_sidecar[1]

    def save_sidecar(self) -> None:
        data: dict[str, Any] = {
            "url": self.spec.url,
            "validator": self.validator,
            "total": self.total,
            "segments": [[s.start, s.end, s.durable] for s in self.segments]
            if self.segments is not None else None,
        }
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.sidecar)
        self.sidecar_written = self.sidecar_fresh = True

    def load_sidecar(self) -> None:
        try:
            data = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(data, dict):
            return
        validator = data.get("validator")
        if isinstance(validator, dict):
            self.validator = {str(k): str(v) for k, v in validator.items()}
        total = data.get("total")
        self.total = total if isinstance(total, int) else None
        segments = data.get("segments")
        if isinstance(segments, list) and self.total is not None:
            try:
                self.segments = [_Segment(int(a), int(b), int(c)) for a, b, c in segments]
            except (TypeError, ValueError):
                self.segments = None


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) → seconds to wait, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def _validator_of(response: httpx.Response) -> dict[str, str]:
    found: dict[str, str] = {}
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):  # weak ETags are not allowed in If-Range
        found["etag"] = etag
    last_modified = response.headers.get("last-modified")
    if last_modified:
        found["last_modified"] = last_modified
    return found


def _if_range(validator: dict[str, str]) -> str | None:
    return validator.get("etag") or validator.get("last_modified")


def _content_range(response: httpx.Response) -> tuple[int, int, int | None] | None:
    m = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)) + 1, total


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _hash_file(path: Path, length: int | None = None) -> hashlib._Hash:
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


def _pwrite_all(fd: int, chunks: list[Chunk], offset: int) -> None:
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


def _hash_all(digest: Any, chunks: list[Chunk]) -> None:
    for chunk in chunks:
        digest.update(chunk)  # releases the GIL for anything over 2 KiB


def _reserve(root: Path, wished: str) -> tuple[str, Path]:
    """A free name for ``wished`` (its ``.part`` created) and that ``.part``'s path."""
    name = reserve_unique_name(root, wished)
    return name, part_path(root, name)


def _reserve_wished(base: Path, wished: str) -> tuple[str, Path] | None:
    """:func:`reserve_unique_name`'s common case in a few syscalls: ``wished`` is free.

    ``base`` is the download root already resolved, so no path is resolved again:
    the name is one sanitized component, the final name must not exist even as a
    symlink, and ``O_EXCL`` never follows one. None when the name is taken or
    anything is unusual; then the careful path decides.
    """
    name = sanitize_filename(wished)
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        return None
    final, part = base / name, base / (name + PART_SUFFIX)
    if os.path.lexists(final):
        return None
    try:
        fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
    except OSError:  # taken, or the root vanished: reserve_unique_name copes
        return None
    os.close(fd)
    if os.path.lexists(final):  # renamed into place by another job meanwhile
        os.unlink(part)
        return None
    return name, part


def _link_into_place(part: Path, filename: str) -> bool:
    """:meth:`Engine._rename_into_place`'s common case; False leaves it to that."""
    try:
        os.link(part, part.with_name(filename))
    except OSError:
        return False
    os.unlink(part)
    return True


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Lane:
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


class _Writer:
    """Writes and hashes received chunks in batches, off the event loop.

    Where the time goes on a 1 GiB loopback download (benchmarks/README.md): copying
    into page-cache pages (0.3-1 s/GiB on this VM, the widest spread), SHA-256
    (~0.62 s/GiB) and the event loop receiving (~0.75 s/GiB) are about the same
    size. Each runs on a thread of its own — writing and hashing both release the
    GIL — so on two cores they overlap instead of adding up. Chunks are collected
    into ``batch``-byte batches: one hand-off per stage per batch, not per chunk
    (fewer GIL hand-overs and loop wake-ups). Each stage is a :class:`_Lane` holding
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
                 segment: _Segment | None = None, batch: int = _BATCH,
                 threaded: bool = True) -> None:
        self._fd = fd
        self._digest = digest
        self._position = position  # file offset of the next batch
        self._start = position
        self._segment = segment
        self._batch_limit = batch
        self._threaded = threaded
        self._chunks: list[Chunk] = []
        self._size = 0
        self._since = 0.0
        self._writes = _Lane()
        self._hashes = _Lane()

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
        _pwrite_all(self._fd, chunks, position)
        if self._segment is not None:
            # Only bytes on disk go into the sidecar; the lane keeps batches in order.
            self._segment.durable = position + sum(len(c) for c in chunks)

    async def submit(self) -> None:
        """Hand the filling batch to the lanes, first waiting for room in them."""
        if not self._chunks:
            return
        digest = self._digest
        if not self._threaded:
            chunks, position = self._take()
            self._write(chunks, position)
            if digest is not None:
                _hash_all(digest, chunks)
            return
        await self._writes.until(_DEPTH - 1)
        if digest is not None:
            await self._hashes.until(_DEPTH - 1)
        # No await from taking the batch to queueing it: a cancellation leaves the
        # batch either in self._chunks or in the lanes, and settle() writes both.
        chunks, position = self._take()
        self._writes.put(lambda: self._write(chunks, position))
        if digest is not None:
            self._hashes.put(lambda: _hash_all(digest, chunks))

    async def flush(self) -> None:
        if self._position == self._start and self._size <= _INLINE_BODY:
            # The whole body is this one small batch (a small file): writing and
            # hashing it here costs less than the two thread hand-offs and loop wake-ups.
            chunks, position = self._take()
            self._write(chunks, position)
            if self._digest is not None:
                _hash_all(self._digest, chunks)
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
        #: download roots as resolved once (see _reserve_wished)
        self._bases: dict[Path, Path] = {}
        # A custom transport (tests, benchmarks) gets only the per-hop literal-IP check;
        # the connect-time guard lives in GuardedTransport.
        self._client = httpx.AsyncClient(
            transport=transport or GuardedTransport(settings),
            timeout=httpx.Timeout(30.0, read=60.0),
            follow_redirects=False,
            headers={"Accept-Encoding": "identity", "User-Agent": "bgdownload/0.1"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def discard(self, root: Path, filename: str) -> None:
        """Delete ``<filename>.part`` and its sidecar (a cancelled job)."""
        for path in (part_path(root, filename), sidecar_path(root, filename)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # ------------------------------------------------------------------ one attempt

    async def fetch(self, spec: FetchSpec, sink: ProgressSink) -> FetchResult:
        """Download ``spec.url`` (resuming ``spec.filename`` when given); one attempt."""
        validate_url(spec.url)
        state = _State(spec=spec, sink=sink)
        limits = [m for m in (spec.max_bytes, self._settings.max_bytes) if m]
        state.max_bytes = min(limits) if limits else None
        buckets: list[TokenBucket] = []
        if spec.max_speed:
            buckets.append(TokenBucket(spec.max_speed))
        if self._worker_limiter is not None:
            buckets.append(self._worker_limiter)
        state.buckets = tuple(buckets)

        if spec.filename is not None:
            if spec.filename != sanitize_filename(spec.filename, fallback=""):
                raise InvalidURL(f"unsafe stored file name {spec.filename!r}")
            state.filename = spec.filename
            state.sidecar_written = True  # an earlier attempt may have left one
            final = safe_path(spec.root, spec.filename)
            if final.exists() and not state.part.exists():
                # An earlier attempt finished the rename but died before reporting it.
                return await self._finished(state, final)
            state.load_sidecar()

        for _ in range(3):
            try:
                if state.segments is not None and state.part.exists():
                    return await self._resume_segments(state)
                return await self._single(state)
            except _Restart:
                self._reset(state)
        raise NetworkError("the source kept changing while it was downloaded")

    def _reset(self, state: _State) -> None:
        """Forget the partial data: empty ``.part``, no segments, no validator."""
        state.segments = None
        state.validator = {}
        state.total = None
        state.loaded = 0
        if state.filename is not None:
            with open(state.part, "wb"):
                pass
            if state.sidecar_written:
                with contextlib.suppress(FileNotFoundError):
                    state.sidecar.unlink()
                state.sidecar_written = False
        state.sidecar_fresh = False

    async def _single(self, state: _State) -> FetchResult:
        spec = state.spec
        existing = 0
        if state.filename is not None and state.part.exists():
            existing = state.part.stat().st_size
            if existing and not _if_range(state.validator):
                existing = 0  # nothing guards a resume: start over rather than splice
        headers = dict(spec.headers)
        if existing:
            headers["Range"] = f"bytes={existing}-"
            headers["If-Range"] = _if_range(state.validator) or ""
        response = await self._open(spec.url, headers)
        try:
            if response.status_code == 416 and existing:
                cr = response.headers.get("content-range", "")
                if cr.strip() == f"bytes */{existing}" and state.total in (None, existing):
                    return await self._complete(state, _hash_file(state.part), existing)
                raise _Restart
            self._raise_for_status(response)
            offset = 0
            if response.status_code == 206:
                parsed = _content_range(response)
                if parsed is None or parsed[0] != existing or (not existing and parsed[0]):
                    raise _Restart
                offset, total = existing, parsed[2]
            else:
                total = _content_length(response)
                if response.headers.get("content-encoding", "identity") != "identity":
                    total = None
            state.total = total
            if state.max_bytes is not None and total is not None and total > state.max_bytes:
                if state.filename is not None:
                    self.discard(spec.root, state.filename)
                raise TooLarge(f"the file has {total} bytes, more than the cap of "
                               f"{state.max_bytes}")
            if state.filename is None:
                await self._choose_name(state, response)
            if offset == 0:
                state.validator = _validator_of(response)
            if (spec.connections > 1 and total is not None and offset == 0
                    and response.status_code == 200
                    and response.headers.get("accept-ranges", "").lower() == "bytes"
                    and state.validator and total >= 2 * self._min_segment):
                return await self._start_segments(state, response, total)
            if offset:
                state.save_sidecar()  # the resumed total may be new; rare, so at once
            return await self._stream_single(state, response, offset)
        finally:
            await response.aclose()

    async def _stream_single(self, state: _State, response: httpx.Response,
                             offset: int) -> FetchResult:
        spec = state.spec
        if offset:
            digest = await asyncio.to_thread(_hash_file, state.part, offset)
        else:
            digest = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC)
        fd = os.open(state.part, flags, 0o644)
        writer = _Writer(fd, digest, offset, threaded=self._threaded_writes)
        loaded, total, cap = offset, state.total, state.max_bytes
        buckets, update = state.buckets, state.sink.update
        too_large = finished = False
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            os.ftruncate(fd, offset)
            update(loaded, total)
            async for chunk in response.aiter_raw():
                size = len(chunk)
                if cap is not None and loaded + size > cap:
                    too_large = True
                    break
                if buckets:
                    await consume_all(buckets, size)
                due = writer.add(chunk)
                loaded += size
                update(loaded, total)  # O(1) by contract: a counter, no I/O
                if due:
                    if not state.sidecar_fresh:
                        # Before the first batch reaches the disk: a body that arrives
                        # whole within one batch (small files) never needs a sidecar.
                        state.save_sidecar()
                    await writer.submit()
            await writer.flush()
            finished = not too_large and (total is None or loaded == total)
        except httpx.TransportError as exc:
            # Keep what arrived: the next attempt resumes after it.
            with contextlib.suppress(Exception):
                await writer.flush()
            raise NetworkError(f"connection lost after {loaded} bytes: {exc}") from exc
        finally:
            writer.settle()
            os.close(fd)
            if not finished and not too_large and not state.sidecar_fresh and loaded:
                # Dropped, cut short or cancelled (pause, shutdown) before any batch was
                # due: what arrived is on disk now, so record how to resume it. Only a
                # crash before the first batch loses the resume of a small body.
                with contextlib.suppress(OSError):
                    state.save_sidecar()
        if too_large:
            self.discard(spec.root, state.filename or "")
            raise TooLarge(f"the body passed the cap of {cap} bytes")
        if total is not None and loaded != total:
            raise NetworkError(f"the body ended after {loaded} of {total} bytes")
        return await self._complete(state, digest, loaded)

    # ------------------------------------------------------------------ requests

    async def _open(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """GET ``url``, following up to 10 redirects, each hop checked (API.md §5)."""
        origin = urlsplit(url)[:2]
        for _ in range(MAX_REDIRECTS + 1):
            validate_url(url)
            check_literal_host(url, self._settings)
            request = self._client.build_request("GET", url, headers=headers)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise NetworkError(f"cannot reach {urlsplit(url).netloc}: {exc}") from exc
            if response.status_code not in _REDIRECTS or "location" not in response.headers:
                return response
            await response.aclose()
            url = urljoin(url, response.headers["location"])
            if urlsplit(url)[:2] != origin:
                # Credentials meant for the first origin must not follow a redirect.
                headers = {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}
        raise NetworkError(f"more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _raise_for_status(response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise HTTPStatusError(
                response.status_code,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if response.status_code >= 300 or response.status_code == 204:
            raise HTTPStatusError(response.status_code)

    async def _choose_name(self, state: _State, response: httpx.Response) -> None:
        spec = state.spec
        wished = choose_filename(spec.wished_filename,
                                 response.headers.get("content-disposition"),
                                 str(response.url))
        # Small local file-system calls, done on the loop when the root is known: a
        # thread hand-off costs more than they do, and small files pay it per file.
        base = self._bases.get(spec.root)
        reserved = _reserve_wished(base, wished) if base is not None else None
        if reserved is None:
            reserved = await asyncio.to_thread(_reserve, spec.root, wished)
            self._bases[spec.root] = reserved[1].parent
        state.filename, part = reserved
        state.known_part = (state.filename, part)
        await state.sink.name_chosen(state.filename, state.filename)

    # ------------------------------------------------------------------ finishing

    async def _complete(self, state: _State, digest: Any, size: int) -> FetchResult:
        spec = state.spec
        assert state.filename is not None
        sha = digest.hexdigest()
        if spec.expected_sha256 and sha.lower() != spec.expected_sha256.strip().lower():
            self.discard(spec.root, state.filename)
            raise ChecksumMismatch(
                f"sha256 of the download is {sha}, expected {spec.expected_sha256}"
            )
        if _link_into_place(state.part, state.filename):
            final_name = state.filename
        else:
            final_name = await asyncio.to_thread(self._rename_into_place, state.spec.root,
                                                 state.filename)
        if state.sidecar_written:
            with contextlib.suppress(FileNotFoundError):
                state.sidecar.unlink()
        return FetchResult(filename=final_name, path=final_name, sha256=sha, size=size)

    @staticmethod
    def _rename_into_place(root: Path, filename: str) -> str:
        """``.part`` → final name without replacing a file that appeared meanwhile."""
        part = part_path(root, filename)
        try:
            os.link(part, safe_path(root, filename))
        except FileExistsError:
            filename = reserve_unique_name(root, filename)
            os.replace(part, part_path(root, filename))
            os.rename(part_path(root, filename), safe_path(root, filename))
            return filename
        except OSError:  # file systems without hard links
            os.rename(part, safe_path(root, filename))
            return filename
        os.unlink(part)
        return filename

    async def _finished(self, state: _State, final: Path) -> FetchResult:
        digest = await asyncio.to_thread(_hash_file, final)
        sha = digest.hexdigest()
        spec = state.spec
        if spec.expected_sha256 and sha.lower() != spec.expected_sha256.strip().lower():
            raise ChecksumMismatch(f"sha256 of {final.name} is {sha}, "
                                   f"expected {spec.expected_sha256}")
        size = (await asyncio.to_thread(final.stat)).st_size
        state.sink.update(size, size)
        assert state.filename is not None
        return FetchResult(filename=state.filename, path=state.filename, sha256=sha, size=size)

    # ------------------------------------------------------------------ segments

    async def _start_segments(self, state: _State, first: httpx.Response,
                              total: int) -> FetchResult:
        """Split a fresh download into ranged segments; ``first`` feeds segment 0."""
        count = max(1, min(state.spec.connections, total // self._min_segment))
        size = -(-total // count)
        state.segments = [_Segment(i * size, min(total, (i + 1) * size), i * size)
                          for i in range(count)]
        fd = os.open(state.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, total)
        finally:
            os.close(fd)
        state.save_sidecar()
        return await self._run_segments(state, first)

    async def _resume_segments(self, state: _State) -> FetchResult:
        assert state.segments is not None and state.total is not None
        if not _if_range(state.validator) or state.part.stat().st_size != state.total:
            raise _Restart
        return await self._run_segments(state, None)

    async def _run_segments(self, state: _State, first: httpx.Response | None) -> FetchResult:
        assert state.segments is not None and state.total is not None
        total = state.total
        state.loaded = sum(s.pos - s.start for s in state.segments)
        state.sink.update(state.loaded, total)
        fd = os.open(state.part, os.O_WRONLY)
        stop = asyncio.Event()

        async def saver() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._sidecar_interval)
                state.save_sidecar()

        pending = [s for s in state.segments if s.remaining]
        lanes = min(state.spec.connections, max(1, len(pending)))
        queue = list(pending)
        if first is not None and queue and queue[0].pos == 0:
            head = queue.pop(0)
            starters = [self._lane(state, fd, queue, head, first)]
        else:
            if first is not None:
                await first.aclose()
            starters = []
        while len(starters) < lanes and queue:
            starters.append(self._lane(state, fd, queue, queue.pop(0), None))
        saver_task = asyncio.create_task(saver())
        try:
            async with asyncio.TaskGroup() as group:
                for lane in starters:
                    group.create_task(lane)
        except* _Restart:
            raise _Restart from None
        except* Exception as eg:
            # One lane's failure cancels the others; report the first cause plainly.
            raise eg.exceptions[0] from None
        finally:
            stop.set()
            await saver_task
            os.close(fd)
        if state.loaded != total or any(s.remaining for s in state.segments):
            raise NetworkError(f"segments ended after {state.loaded} of {total} bytes")
        digest = await asyncio.to_thread(_hash_file, state.part)
        return await self._complete(state, digest, total)

    async def _lane(self, state: _State, fd: int, queue: list[_Segment], segment: _Segment,
                    response: httpx.Response | None) -> None:
        """One connection: download ``segment``, then queued ones, then steal the largest tail."""
        current: _Segment | None = segment
        while current is not None:
            await self._segment(state, fd, current, response)
            response = None
            current = queue.pop(0) if queue else self._steal(state)

    def _steal(self, state: _State) -> _Segment | None:
        assert state.segments is not None
        victim = max(state.segments, key=lambda s: s.remaining)
        # Splitting a small tail costs a new request for little gain.
        if victim.remaining < 2 * max(self._min_segment // 4, 256 * 1024):
            return None
        middle = victim.pos + victim.remaining // 2
        stolen = _Segment(middle, victim.end, middle)
        victim.end = middle
        state.segments.append(stolen)
        return stolen

    async def _segment(self, state: _State, fd: int, seg: _Segment,
                       response: httpx.Response | None) -> None:
        if not seg.remaining:
            if response is not None:
                await response.aclose()
            return
        if response is None:
            headers = dict(state.spec.headers)
            headers["Range"] = f"bytes={seg.pos}-{seg.end - 1}"
            headers["If-Range"] = _if_range(state.validator) or ""
            response = await self._open(state.spec.url, headers)
            if response.status_code == 200:
                await response.aclose()
                raise _Restart  # the source changed or stopped honouring ranges
            self._raise_for_status(response)
            parsed = _content_range(response)
            if parsed is None or parsed[0] != seg.pos or parsed[2] != state.total:
                await response.aclose()
                raise _Restart
        buckets, update, total = state.buckets, state.sink.update, state.total
        writer = _Writer(fd, None, seg.pos, segment=seg, threaded=self._threaded_writes)
        try:
            async for chunk in response.aiter_raw():
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
        except httpx.TransportError as exc:
            with contextlib.suppress(Exception):
                await writer.flush()
            raise NetworkError(f"a connection was lost at byte {seg.pos}: {exc}") from exc
        finally:
            writer.settle()
            await response.aclose()
        if seg.remaining:
            raise NetworkError(f"a segment ended early at byte {seg.pos} of {seg.end}")
