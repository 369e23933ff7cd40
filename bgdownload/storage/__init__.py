"""Where finished bytes go: the :class:`Storage` seam and the storage of a download root.

The engine writes a download into a ``.part`` beside a sidecar (what it needs to
resume), and only a verified file is promoted to its final name; the service serves
and deletes finished files and drops a cancelled job's partial data. All of them
ask a :class:`Storage` for those names and paths instead of building paths
themselves, so another kind of storage (an object store) can stand where the
download root stands today (:class:`bgdownload.storage.files.FileStorage`).

Each owner has a storage of its own (:func:`storage_at`): with tokens configured
its folder under the root, for ``local`` the root itself
(:mod:`bgdownload.storage.owners`, docs/api.md §17).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bgdownload.errors import StorageError
from bgdownload.storage.files import Claim, FileStorage
from bgdownload.storage.owners import LOCAL_OWNER, owner_folder

__all__ = ["LOCAL_OWNER", "Claim", "FileStorage", "Storage", "owner_folder", "storage_at"]


class Storage(Protocol):
    """The names, partial data and finished files of one download destination.

    ``name`` is always one safe file name as :meth:`reserve` gave it out (a job's
    ``filename``; its ``path`` is :meth:`path_of` it); a name that would leave the
    storage raises :class:`bgdownload.errors.InvalidURL`.
    """

    def path_of(self, name: str) -> str:
        """The job ``path`` of ``name``: relative to the download root, owner folder first."""
        ...

    def name_at(self, path: str) -> str | None:
        """The name a job ``path`` stands for in this storage; None when it is not in it."""
        ...

    async def reserve(self, wished: str, claim: Claim | None = None) -> tuple[str, Path]:
        """Claim a free name for ``wished``, create its empty ``.part``; the name and that path.

        ``wished`` is sanitised; when it is taken, ``name (1).ext``, ``name (2).ext``
        … so two jobs racing for one name always end up with different ones. With
        ``claim``, a name also has to be granted by it (the job store's reservation);
        a refused one is given back (its ``.part`` removed) and the next one tried.
        """
        ...

    def part_path(self, name: str) -> Path:
        """Where the bytes of ``name`` are written until they are verified."""
        ...

    def sidecar_path(self, name: str) -> Path:
        """Where the engine keeps what it needs to resume ``name``."""
        ...

    def file_path(self, name: str) -> Path:
        """The finished file ``name`` (a job's ``path``): what ``GET …/file`` serves."""
        ...

    def has_part(self, name: str) -> bool:
        """True when partial data of ``name`` is there to resume (False for unsafe names)."""
        ...

    async def promote(self, name: str, claim: Claim | None = None) -> str:
        """Give the verified ``.part`` of ``name`` its final name; returns that name.

        Never replaces a file that appeared meanwhile: the file then gets the next
        free name instead, reserved through ``claim`` like the first.
        """
        ...

    def storage_error(self, exc: OSError, name: str | None) -> StorageError | None:
        """The :class:`StorageError` that ``exc``, met while writing ``name``, means; else None.

        None when ``exc`` is not the destination refusing the bytes (permissions,
        read-only, disk full, name too long); the message never holds an absolute path.
        """
        ...

    def discard(self, name: str) -> None:
        """Delete the partial data of ``name`` (its ``.part`` and sidecar), if any."""
        ...

    def delete(self, name: str) -> None:
        """Delete the finished file ``name`` and any partial data of it."""
        ...


def storage_at(root: Path, owner: str = LOCAL_OWNER) -> Storage:
    """The storage of ``owner``'s files under the download root ``root``."""
    return FileStorage.of_owner(root, owner)
