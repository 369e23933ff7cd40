"""A destination that cannot be written fails the job with ``storage_error`` (docs/api.md §6, §11).

Tests run as root, where ``chmod 0555`` stops nothing: an immutable folder
(``chattr +i``) stands for a folder the worker may not write, a read-only tmpfs
for a read-only file system, and a 2 MiB tmpfs for a full disk. Each fixture
skips with the reason when the machine does not allow it (no ``chattr``, no
permission to mount).
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgdownload.config import Settings
from bgdownload.engine.fetch import Engine, FetchResult, FetchSpec
from bgdownload.errors import StorageError
from bgdownload.service import Service
from tests.support.source_server import SourceServer
from tests.support.stack import WorkerProcess, wait_for_state

OWNER = "local"
LOOPBACK = Settings(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))


class Sink:
    def __init__(self) -> None:
        self.names: list[str] = []

    def update(self, loaded: int, total: int | None) -> None:
        pass

    async def name_chosen(self, filename: str, path: str) -> None:
        self.names.append(filename)

    async def restarted(self, note: str) -> None:
        pass


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _mount_tmpfs(where: Path, options: str) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    done = _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def immutable_dir(download_dir: Path) -> Iterator[Path]:
    """The download folder, made immutable: nothing can be created, renamed or removed in it."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr on this machine to make a folder immutable")
    done = _run("chattr", "+i", str(download_dir))
    if done.returncode != 0:
        pytest.skip(f"this file system cannot make a folder immutable: {done.stderr.strip()}")
    try:
        yield download_dir
    finally:
        _run("chattr", "-i", str(download_dir))


@pytest.fixture
def readonly_dir(download_dir: Path) -> Iterator[Path]:
    """The download folder on a tmpfs mounted read-only (EROFS)."""
    _mount_tmpfs(download_dir, "size=1m")
    try:
        done = _run("mount", "-o", "remount,ro", str(download_dir))
        if done.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs read-only: {done.stderr.strip()}")
        yield download_dir
    finally:
        _run("umount", str(download_dir))


@pytest.fixture
def small_disk(download_dir: Path) -> Iterator[Path]:
    """The download folder on a 2 MiB tmpfs; ``mount -o remount,size=…`` frees space."""
    _mount_tmpfs(download_dir, "size=2m")
    try:
        yield download_dir
    finally:
        _run("umount", str(download_dir))


def _grow(disk: Path) -> None:
    done = _run("mount", "-o", "remount,size=16m", str(disk))
    assert done.returncode == 0, done.stderr


async def _fetch(url: str, root: Path, sink: Sink, filename: str | None = None) -> FetchResult:
    engine = Engine(LOOPBACK)
    try:
        return await engine.fetch(FetchSpec(url=url, root=root, filename=filename), sink)
    finally:
        await engine.aclose()


async def test_immutable_folder_is_a_storage_error_naming_the_file(
        immutable_dir: Path, source: SourceServer) -> None:
    with pytest.raises(StorageError) as info:
        await _fetch(source.url("/bytes/1000?cd=attachment%3B%20filename%3Dro.whl"),
                     immutable_dir, Sink())
    assert info.value.code == "storage_error" and not info.value.transient
    assert info.value.message == (
        "cannot write 'ro.whl.part' in the download folder: operation not permitted")
    assert list(immutable_dir.iterdir()) == []


async def test_read_only_file_system_is_a_storage_error(
        readonly_dir: Path, source: SourceServer) -> None:
    with pytest.raises(StorageError) as info:
        await _fetch(source.url("/bytes/1000"), readonly_dir, Sink())
    assert info.value.message == (
        "cannot write '1000.part' in the download folder: read-only file system")
    assert str(readonly_dir) not in info.value.message


async def test_full_disk_keeps_the_part_and_resumes_once_there_is_room(
        small_disk: Path, source: SourceServer) -> None:
    size = 3_000_000
    # slow enough that a resume point is recorded before the disk fills
    url = source.url(f"/bytes/{size}?seed=full&rate=1500000")
    sink = Sink()
    with pytest.raises(StorageError) as info:
        await _fetch(url, small_disk, sink)
    name = sink.names[0]
    assert info.value.message == f"cannot write '{name}.part' in the download folder: disk full"
    assert info.value.keep_partial
    assert sorted(p.name for p in small_disk.iterdir()) == [f"{name}.part", f"{name}.part.json"]
    _grow(small_disk)
    result = await _fetch(url.replace("rate=1500000", "rate=0"), small_disk, Sink(), name)
    assert result.sha256 == source.expected_sha256(size, "full")
    ranged = source.ranged_requests(f"/bytes/{size}")
    assert ranged and int((ranged[0].range or "").split("=")[1].split("-")[0]) > 0


async def test_worker_fails_the_job_at_once_with_storage_error_and_retry_resumes(
        small_disk: Path, service: Service, worker: WorkerProcess,
        source: SourceServer) -> None:
    size = 3_000_000
    job, _ = await service.create(OWNER, {"url": source.url(
        f"/bytes/{size}?seed=wfull&validators=0&rate=1500000")})
    failed = await wait_for_state(service, OWNER, job.id, {"failed", "completed"})
    assert failed.state.value == "failed" and failed.attempts == 1  # not retried
    assert failed.error == {"code": "storage_error", "message":
                            f"cannot write '{failed.filename}.part' in the download folder: "
                            "disk full"}
    assert (small_disk / f"{failed.filename}.part").exists()
    log = worker.log()
    assert "Traceback" not in log and "failed unexpectedly" not in log, log[-2000:]
    _grow(small_disk)
    await service.retry(OWNER, job.id)
    done = await wait_for_state(service, OWNER, job.id, {"failed", "completed"})
    assert done.state.value == "completed", done.error
    data = (small_disk / done.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == source.expected_sha256(size, "wfull")
    assert source.ranged_requests(f"/bytes/{size}"), "the retry resumed the kept .part"


async def test_worker_reports_an_immutable_folder_as_storage_error(
        immutable_dir: Path, service: Service, worker: WorkerProcess,
        source: SourceServer) -> None:
    job, _ = await service.create(OWNER, {"url": source.url("/bytes/1000"),
                                          "filename": "ro.whl"})
    failed = await wait_for_state(service, OWNER, job.id, {"failed", "completed"})
    assert failed.state.value == "failed" and failed.attempts == 1
    assert failed.error == {"code": "storage_error", "message":
                            "cannot write 'ro.whl.part' in the download folder: "
                            "operation not permitted"}
    assert "Traceback" not in worker.log()
