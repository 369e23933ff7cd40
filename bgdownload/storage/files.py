"""An owner's folder of the download root: finished files, ``.part`` and sidecar side by side.

``<name>.part`` holds the bytes until they are verified, ``<name>.part.json`` (the
sidecar) what a later attempt needs to resume them; a verified ``.part`` is
linked (or renamed) to ``<name>``, never over a file that is there already. Every
path is checked to stay inside the folder, symlinks included (docs/api.md §5). A
name is taken by creating its ``.part`` with ``O_EXCL`` and, when a claim is given,
by the job store's reservation too (docs/api.md §17): a file is only ever deleted
by the job that holds its name.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

from bgdownload.errors import InvalidURL, StorageError
from bgdownload.storage.names import sanitize_filename, split_ext
from bgdownload.storage.owners import LOCAL_OWNER, owner_folder

#: takes a name for the job writing it: True when the job now holds it, False when
#: another job does (then the next free name is tried)
Claim = Callable[[str], Awaitable[bool]]

PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"

log = logging.getLogger(__name__)

#: what each ``errno`` that says "this destination cannot be written" tells a user
_STORAGE_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
}
#: of those, the ones where the partial data stays good: space can be freed, then resumed
_KEEPS_PARTIAL = frozenset({errno.ENOSPC, errno.EDQUOT})


def safe_path(root: Path, name: str) -> Path:
    """``root/name``, refusing any name that would land outside ``root``."""
    base = root.resolve()
    if not _is_component(name):
        raise InvalidURL(f"unsafe file name {name!r}")
    path = (base / name).resolve()
    if path.parent != base:
        raise InvalidURL(f"file name {name!r} leaves the download root")
    return path


def part_path(root: Path, name: str) -> Path:
    return safe_path(root, name + PART_SUFFIX)


def sidecar_path(root: Path, name: str) -> Path:
    return safe_path(root, name + SIDECAR_SUFFIX)


def reserve_unique_name(root: Path, name: str, *, limit: int = 10_000,
                        skip: Collection[str] = ()) -> str:
    """Claim a free name in ``root`` for ``name`` and create its empty ``.part``.

    Picks ``name``, then ``name (1).ext``, ``name (2).ext`` … such that neither the
    final file nor its ``.part`` exists (and that is not in ``skip``: held by other
    jobs), creating the ``.part`` with ``O_EXCL`` so two jobs racing for the same
    name always end up with different ones.
    """
    name = sanitize_filename(name)
    root.mkdir(parents=True, exist_ok=True)
    stem, ext = split_ext(name)
    for i in range(limit):
        candidate = name if i == 0 else f"{stem} ({i}){ext}"
        if candidate in skip:
            continue
        final = safe_path(root, candidate)
        if final.exists() or final.is_symlink():
            continue
        try:
            fd = os.open(part_path(root, candidate), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        # Another job may have renamed its finished ``.part`` into place meanwhile.
        if final.exists():
            os.unlink(part_path(root, candidate))
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, f"no free file name for {name!r}")


def storage_error(root: Path, exc: OSError, name: str | None) -> StorageError | None:
    """What ``exc`` means to a user when it hit ``name`` (or the file ``exc`` names) in ``root``.

    None when ``exc`` is not one of the "cannot write here" errors. The message names
    the file relative to the root (docs/api.md §6), never an absolute path.
    """
    reason = _STORAGE_ERRNOS.get(exc.errno or 0)
    if reason is None:
        return None
    keep = exc.errno in _KEEPS_PARTIAL
    where = name
    if isinstance(exc.filename, str | os.PathLike):
        failed = Path(os.fsdecode(exc.filename))
        where = None if _same_path(failed, root) else failed.name
    if where is None:
        return StorageError(f"cannot write to the download folder: {reason}", keep_partial=keep)
    return StorageError(f"cannot write {where!r} in the download folder: {reason}",
                        keep_partial=keep)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def _is_component(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\x00")


def _reserve_wished(base: Path, wished: str, skip: Collection[str]) -> tuple[str, Path] | None:
    """:func:`reserve_unique_name`'s common case in a few syscalls: ``wished`` is free.

    ``base`` is the folder already resolved, so no path is resolved again:
    the name is one sanitized component, the final name must not exist even as a
    symlink, and ``O_EXCL`` never follows one. None when the name is taken or
    anything is unusual; then the careful path decides.
    """
    name = sanitize_filename(wished)
    if not _is_component(name) or name in skip:
        return None
    final, part = base / name, base / (name + PART_SUFFIX)
    if os.path.lexists(final):
        return None
    try:
        fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
    except OSError:  # taken, or the folder is not there yet: reserve_unique_name copes
        return None
    os.close(fd)
    if os.path.lexists(final):  # renamed into place by another job meanwhile
        os.unlink(part)
        return None
    return name, part


def _place(root: Path, filename: str) -> bool:
    """``.part`` → final name; False (nothing moved) when a file of that name is there."""
    part = part_path(root, filename)
    try:
        os.link(part, safe_path(root, filename))
    except FileExistsError:
        return False
    except OSError:  # file systems without hard links
        os.rename(part, safe_path(root, filename))
        return True
    os.unlink(part)
    return True


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


class FileStorage:
    """The files of one owner's folder of a download root (see :class:`bgdownload.storage.Storage`).

    ``folder`` is the owner's folder relative to ``root`` (``""``: the root itself).

    >>> storage = FileStorage(Path("downloads"), "alice")
    >>> name, part = await storage.reserve("report.pdf")          # doctest: +SKIP
    >>> storage.path_of(name)                                       # doctest: +SKIP
    'alice/report.pdf'
    """

    def __init__(self, root: Path, folder: str = "") -> None:
        self.root = root
        self.folder = folder
        #: where the files are; an owner folder that is a symlink out of the root is refused
        self.dir = safe_path(root, folder) if folder else root
        #: the folder as resolved once: the common reservation and promotion then cost a
        #: few syscalls on the event loop instead of a thread hand-off (small files
        #: pay that per file)
        self._base: Path | None = None

    @classmethod
    def of_owner(cls, root: Path, owner: str = LOCAL_OWNER) -> FileStorage:
        return cls(root, owner_folder(owner))

    def path_of(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name

    def name_at(self, path: str) -> str | None:
        folder, _, name = path.rpartition("/")
        if folder != self.folder or not _is_component(name):
            return None
        return name

    async def reserve(self, wished: str, claim: Claim | None = None) -> tuple[str, Path]:
        """A free name for ``wished`` with its empty ``.part`` created, and that path."""
        refused: set[str] = set()
        while True:
            reserved = None
            if self._base is not None:
                reserved = _reserve_wished(self._base, wished, refused)
            if reserved is None:
                name = await asyncio.to_thread(reserve_unique_name, self.dir, wished,
                                               skip=refused)
                reserved = name, self.part_path(name)
            name, part = reserved
            try:
                if claim is None or await claim(name):
                    return reserved
            except BaseException:
                _remove_quietly(part)  # ours: created just now, never held
                raise
            _remove_quietly(part)
            refused.add(name)

    def part_path(self, name: str) -> Path:
        path = part_path(self.dir, name)
        self._base = path.parent
        return path

    def sidecar_path(self, name: str) -> Path:
        return sidecar_path(self.dir, name)

    def file_path(self, name: str) -> Path:
        return safe_path(self.dir, name)

    def has_part(self, name: str) -> bool:
        try:
            return part_path(self.dir, name).exists()
        except InvalidURL:
            return False

    async def promote(self, name: str, claim: Claim | None = None) -> str:
        base = self._base
        if base is not None and _is_component(name):
            # The common case on the loop; anything unusual goes the careful way.
            part = base / (name + PART_SUFFIX)
            try:
                os.link(part, base / name)
            except OSError:
                pass
            else:
                os.unlink(part)
                return name
        while not await asyncio.to_thread(_place, self.dir, name):
            # A file appeared under the name (put there by hand): move to the next free one.
            new, new_part = await self.reserve(name, claim)
            await asyncio.to_thread(os.replace, self.part_path(name), new_part)
            name = new
        return name

    def storage_error(self, exc: OSError, name: str | None) -> StorageError | None:
        return storage_error(self.dir, exc, name)

    def discard(self, name: str) -> None:
        for path in (part_path(self.dir, name), sidecar_path(self.dir, name)):
            _remove_quietly(path)

    def delete(self, name: str) -> None:
        _remove_quietly(safe_path(self.dir, name))
        self.discard(name)
