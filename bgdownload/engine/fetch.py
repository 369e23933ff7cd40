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

This module is the engine's public seam (:class:`Engine` and the types it takes
and returns) and the single-connection download; the parallel ranged download is
in :mod:`bgdownload.engine.segments`, the writing and hashing threads in
:mod:`bgdownload.engine.writer`, the per-attempt state and its sidecar in
:mod:`bgdownload.engine.attempt`, and header parsing in :mod:`bgdownload.engine.responses`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from bgdownload.config import Settings
from bgdownload.engine.attempt import AttemptState, FetchResult, FetchSpec, ProgressSink, Restart
from bgdownload.engine.limiter import TokenBucket, consume_all
from bgdownload.engine.responses import (
    content_length,
    content_range,
    if_range,
    raise_for_status,
    validator_of,
)
from bgdownload.engine.safety import (
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
from bgdownload.engine.segments import MIN_SEGMENT, SIDECAR_INTERVAL, SegmentedDownload
from bgdownload.engine.transport import GuardedTransport
from bgdownload.engine.writer import Writer, hash_file
from bgdownload.errors import (
    ChecksumMismatch,
    InvalidURL,
    NetworkError,
    TooLarge,
)

__all__ = [
    "MAX_REDIRECTS",
    "MIN_SEGMENT",
    "SIDECAR_INTERVAL",
    "Engine",
    "FetchResult",
    "FetchSpec",
    "ProgressSink",
]

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


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
        state = AttemptState(spec=spec, sink=sink)
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
                    return await self._segmented(state).resume()
                return await self._single(state)
            except Restart:
                self._reset(state)
        raise NetworkError("the source kept changing while it was downloaded")

    def _reset(self, state: AttemptState) -> None:
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

    async def _single(self, state: AttemptState) -> FetchResult:
        spec = state.spec
        existing = 0
        if state.filename is not None and state.part.exists():
            existing = state.part.stat().st_size
            if existing and not if_range(state.validator):
                existing = 0  # nothing guards a resume: start over rather than splice
        headers = dict(spec.headers)
        if existing:
            headers["Range"] = f"bytes={existing}-"
            headers["If-Range"] = if_range(state.validator) or ""
        response = await self._open(spec.url, headers)
        try:
            if response.status_code == 416 and existing:
                cr = response.headers.get("content-range", "")
                if cr.strip() == f"bytes */{existing}" and state.total in (None, existing):
                    return await self._complete(state, hash_file(state.part), existing)
                raise Restart
            raise_for_status(response)
            offset = 0
            if response.status_code == 206:
                parsed = content_range(response)
                if parsed is None or parsed[0] != existing or (not existing and parsed[0]):
                    raise Restart
                offset, total = existing, parsed[2]
            else:
                total = content_length(response)
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
                state.validator = validator_of(response)
            if (spec.connections > 1 and total is not None and offset == 0
                    and response.status_code == 200
                    and response.headers.get("accept-ranges", "").lower() == "bytes"
                    and state.validator and total >= 2 * self._min_segment):
                return await self._segmented(state).start(response, total)
            if offset:
                state.save_sidecar()  # the resumed total may be new; rare, so at once
            return await self._stream_single(state, response, offset)
        finally:
            await response.aclose()

    async def _stream_single(self, state: AttemptState, response: httpx.Response,
                             offset: int) -> FetchResult:
        spec = state.spec
        if offset:
            digest = await asyncio.to_thread(hash_file, state.part, offset)
        else:
            digest = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC)
        fd = os.open(state.part, flags, 0o644)
        writer = Writer(fd, digest, offset, threaded=self._threaded_writes)
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

    async def _choose_name(self, state: AttemptState, response: httpx.Response) -> None:
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

    async def _complete(self, state: AttemptState, digest: Any, size: int) -> FetchResult:
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
        return FetchResult(filename=state.filename, path=state.filename, sha256=sha, size=size)

    # ------------------------------------------------------------------ segments

    def _segmented(self, state: AttemptState) -> SegmentedDownload:
        """The parallel ranged download of ``state``; requests and finishing stay here."""
        return SegmentedDownload(state, open_url=self._open, complete=self._complete,
                                 min_segment=self._min_segment,
                                 sidecar_interval=self._sidecar_interval,
                                 threaded_writes=self._threaded_writes)
