"""Resuming safely: the overlap check for sources without a validator, and durable resume points.

A source that sends an ``ETag`` or ``Last-Modified`` is resumed with ``If-Range``
and answers the whole new file when it changed. One that sends neither is asked
for ``k`` bytes more than needed — from ``k`` bytes before the end of what is on
disk (``k`` = :func:`overlap_for`) — and those ``k`` bytes must equal the disk's,
or the download restarts from zero (docs/api.md §11). A parallel download does
the same per segment; a segment that starts where nothing is on disk yet keeps
the digest of its overlap and checks it once the neighbouring bytes have arrived.

:class:`Checkpoints` makes a resume point durable: the ``.part`` is flushed
(``fdatasync``) before the sidecar records the offsets that flush covers, and the
sidecar is replaced atomically (write to a temporary file, fsync, rename), so a
power loss cannot leave a resume point past the durable bytes. Syncs happen only
when the sidecar is written, at most every ``interval`` seconds, off the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

#: the most bytes compared when a download without a validator resumes
OVERLAP = 64 * 1024
#: the ``state`` event's note when the source's bytes or size changed under a resume
CHANGED = "source changed; restarted"
#: ... when it answered a ranged read with the whole file
IGNORED_RANGE = "source sent the whole file instead of the rest; restarted"
#: ... when the partial file no longer matches what its sidecar says
DAMAGED = "partial file did not match its record; restarted"

#: fdatasync + sidecar writes, off the event loop (each blocks for a disk flush)
_SYNC_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4,
                                                   thread_name_prefix="bgd-sync")


@functools.cache
def boot_id() -> str:
    """This boot of the machine ("" where the system does not say).

    A sidecar written during this boot speaks for a ``.part`` whose every written
    byte is still there (a killed process loses nothing the kernel accepted); after
    a reboot — a power loss — only the bytes it records as synced are.
    """
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def overlap_for(on_disk: int) -> int:
    """How many bytes before ``on_disk`` a resume without a validator asks for again."""
    return min(OVERLAP, max(0, on_disk))


async def take_head(body: AsyncIterator[bytes], size: int
                    ) -> tuple[bytes, AsyncIterator[bytes]] | None:
    """The first ``size`` bytes of ``body`` and an iterator over the rest; None if it ends first."""
    head = bytearray()
    leftover = b""
    async for chunk in body:
        need = size - len(head)
        head += chunk[:need]
        if len(head) >= size:
            leftover = bytes(chunk[need:])
            break
    else:
        return None

    async def rest() -> AsyncIterator[bytes]:
        if leftover:
            yield leftover
        async for chunk in body:
            yield chunk

    return bytes(head), rest()


def read_at(path: Path, offset: int, size: int) -> bytes:
    """``size`` bytes of ``path`` from ``offset`` (fewer at its end)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_sidecar(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably: temp file, fsync, rename.

    On a full disk the temporary file may find no room where the old sidecar's
    blocks would: then the sidecar is rewritten in place (a torn write leaves JSON
    that does not parse, which resumes nothing rather than something wrong), so a
    download stopped by a full disk keeps its last resume point.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_synced(tmp, text, os.O_CREAT | os.O_TRUNC)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.exists():
            raise
        _write_synced(path, text, 0)


def _write_synced(path: Path, text: str, flags: int) -> None:
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | flags, 0o644)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoints:
    """Durable resume points of one open ``.part``: sync the data, then record it.

    ``snapshot`` captures what the sidecar will say (on the event loop, before the
    sync starts, so it covers only bytes already written); ``save`` syncs ``fd`` and
    writes that snapshot. :meth:`finish` runs on every exit path before ``fd`` is
    closed: it waits for a sync in flight and records the final offsets.
    """

    def __init__(self, fd: int, interval: float, snapshot: Callable[[], Any],
                 save: Callable[[Any], None]) -> None:
        self._fd = fd
        self._interval = interval
        self._snapshot = snapshot
        self._save = save
        self._pending: concurrent.futures.Future[None] | None = None
        self._last = time.monotonic()

    def due(self) -> bool:
        """Whether a checkpoint is due now; raises the error of the previous one."""
        pending = self._pending
        if pending is not None:
            if not pending.done():
                return False
            self._pending = None
            pending.result()  # a full disk shows here as early as in the writes
        return time.monotonic() - self._last >= self._interval

    def start(self) -> concurrent.futures.Future[None]:
        """Begin a checkpoint in the background: sync, then write the sidecar."""
        data = self._snapshot()
        self._last = time.monotonic()
        self._pending = _SYNC_POOL.submit(self._sync, data)
        return self._pending

    async def run(self) -> None:
        """One checkpoint, awaited."""
        await asyncio.wrap_future(self.start())

    def finish(self, *, record: bool = True) -> None:
        """Block until the sync in flight ends, then (``record``) save the final offsets durably."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                pending.result()
        if record:
            self._sync(self._snapshot())

    def _sync(self, data: Any) -> None:
        os.fdatasync(self._fd)
        self._save(data)
