"""Resume helpers: the overlap's head split off a body, durable checkpoints, storage errors."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bgdownload.engine import resume
from bgdownload.engine.resume import Checkpoints, overlap_for, take_head, write_sidecar
from bgdownload.storage import FileStorage


async def _body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _collect(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in body])


def test_overlap_is_at_most_64_kib_and_never_more_than_is_on_disk() -> None:
    assert [overlap_for(n) for n in (0, 10, 65536, 10**9)] == [0, 10, 65536, 65536]


async def test_take_head_splits_inside_a_chunk_and_keeps_the_rest() -> None:
    got = await take_head(_body(b"abc", b"defg", b"hij"), 5)
    assert got is not None
    head, rest = got
    assert head == b"abcde" and await _collect(rest) == b"fghij"


async def test_take_head_of_a_body_that_ends_early_is_none() -> None:
    assert await take_head(_body(b"abc"), 5) is None


def test_checkpoint_syncs_the_data_before_it_records_the_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_sync = os.fdatasync

    def sync(fd: int) -> None:
        order.append("sync")
        real_sync(fd)

    monkeypatch.setattr(resume.os, "fdatasync", sync)
    sidecar = tmp_path / "a.part.json"
    fd = os.open(tmp_path / "a.part", os.O_WRONLY | os.O_CREAT)
    try:
        checkpoints = Checkpoints(fd, 0.0, lambda: json.dumps({"done": 7}),
                                  lambda text: (order.append("save"),
                                                write_sidecar(sidecar, text)))
        checkpoints.start().result(10)
        checkpoints.finish()
    finally:
        os.close(fd)
    assert order == ["sync", "save", "sync", "save"]
    assert json.loads(sidecar.read_text()) == {"done": 7}


def test_sidecar_is_replaced_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    sidecar = tmp_path / "b.part.json"
    write_sidecar(sidecar, "old")
    write_sidecar(sidecar, "new")
    assert sidecar.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["b.part.json"]


def test_a_failed_sidecar_write_keeps_the_old_one(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = tmp_path / "c.part.json"
    write_sidecar(sidecar, "old")

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(resume.os, "fsync", broken)
    with pytest.raises(OSError):
        write_sidecar(sidecar, "new")
    assert sidecar.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["c.part.json"]


def test_on_a_full_disk_the_sidecar_is_rewritten_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = tmp_path / "d.part.json"
    write_sidecar(sidecar, "a much longer old record")
    real_open = os.open

    def no_new_files(path: Path, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(resume.os, "open", no_new_files)
    write_sidecar(sidecar, "new")
    assert sidecar.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["d.part.json"]


@pytest.mark.parametrize(("code", "reason", "keep"), [
    (errno.EACCES, "permission denied", False),
    (errno.EPERM, "operation not permitted", False),
    (errno.EROFS, "read-only file system", False),
    (errno.ENOSPC, "disk full", True),
    (errno.ENAMETOOLONG, "file name too long", False),
])
def test_storage_errors_name_the_file_relative_to_the_root(
        tmp_path: Path, code: int, reason: str, keep: bool) -> None:
    storage = FileStorage(tmp_path)
    exc = OSError(code, os.strerror(code), str(tmp_path / "ro.whl.part"))
    failure = storage.storage_error(exc, "other.part")
    assert failure is not None and failure.code == "storage_error"
    assert failure.message == f"cannot write 'ro.whl.part' in the download folder: {reason}"
    assert str(tmp_path) not in failure.message and failure.keep_partial is keep
    assert not failure.transient


def test_storage_error_without_a_file_name_uses_the_one_being_written(tmp_path: Path) -> None:
    failure = FileStorage(tmp_path).storage_error(OSError(errno.ENOSPC, "full"), "x.bin.part")
    assert failure is not None
    assert failure.message == "cannot write 'x.bin.part' in the download folder: disk full"


def test_storage_error_on_the_root_itself_names_the_download_folder(tmp_path: Path) -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", str(tmp_path))
    failure = FileStorage(tmp_path).storage_error(exc, None)
    assert failure is not None
    assert failure.message == "cannot write to the download folder: permission denied"


def test_other_os_errors_are_not_storage_errors(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    assert storage.storage_error(ConnectionRefusedError(errno.ECONNREFUSED, "x"), "a") is None
    assert storage.storage_error(TimeoutError("slow"), "a") is None
