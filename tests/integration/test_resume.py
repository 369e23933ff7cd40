"""Resume always, never splice (docs/api.md §11): real workers, a source without validators.

Every case runs the download in ``taskiq worker`` processes against the test source
with ``validators=0`` (no ``ETag``, no ``Last-Modified``), pauses it or SIGKILLs its
worker, and checks what the source was asked (``Range`` from before the resume
point: the overlap), that the file is exactly one version of the source, and that a
restart is explained by a ``state`` event's note.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from bgdownload.models import Event
from bgdownload.service import Service
from tests.support.source_server import SourceServer
from tests.support.stack import WorkerProcess, wait_for_state

OWNER = "local"
CHANGED = "source changed; restarted"
OVERLAP = 64 * 1024


async def _sidecar(download_dir: Path, ready: Any, timeout: float = 30) -> dict[str, Any]:
    """The sidecar once ``ready(sidecar)`` holds: it is written when a resume point is durable."""
    deadline = time.monotonic() + timeout
    while True:
        for path in download_dir.glob("*.part.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # replaced between the glob and the read
            if ready(data):
                return data
        assert time.monotonic() < deadline, "no durable resume point was recorded"
        await asyncio.sleep(0.05)


async def _wait_on_disk(download_dir: Path, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while sum(p.stat().st_size for p in download_dir.glob("*.part")) < at_least:
        assert time.monotonic() < deadline, "nothing reached the .part file"
        await asyncio.sleep(0.05)


async def _wait_loaded(service: Service, job_id: str, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while (await service.get(OWNER, job_id)).progress.loaded < at_least:
        assert time.monotonic() < deadline, "the download never got going"
        await asyncio.sleep(0.05)


async def _events(service: Service, job_id: str) -> list[Event]:
    """Every event of a finished job, replayed from the start as a client would get them."""
    async with asyncio.timeout(30):
        return [e async for e in service.job_events(OWNER, job_id, last_event_id="0-0")]


def _starts(source: SourceServer, path: str) -> list[int]:
    return [int((r.range or "").split("=")[1].split("-")[0]) for r in source.ranged_requests(path)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_pause_and_resume_without_validator_continues_after_an_overlap(
        service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    size = 3_000_000
    path = f"/bytes/{size}"
    job, _ = await service.create(OWNER, {"url": source.url(
        f"{path}?seed=np&validators=0&rate=1000000")})
    await _wait_loaded(service, job.id, 400_000)
    paused = await service.pause(OWNER, job.id)
    assert paused.state.value == "paused"
    side = await _sidecar(download_dir, lambda d: d["done"])
    pause_point = side["done"]
    assert side["validator"] == {} and pause_point >= 400_000
    await service.resume(OWNER, job.id)
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "completed", done.error
    assert _sha(download_dir / done.path) == source.expected_sha256(size, "np") == done.sha256
    # continued from before the pause point, by the overlap that proves it is the same file
    assert _starts(source, path) == [pause_point - OVERLAP]
    assert not [e for e in await _events(service, job.id) if e.data.get("note")]


async def test_sigkilled_worker_without_validator_is_resumed_by_another(
        service: Service, start_worker, source: SourceServer, download_dir: Path
) -> None:
    size = 4_000_000
    path = f"/bytes/{size}"
    first: WorkerProcess = start_worker()
    job, _ = await service.create(OWNER, {"url": source.url(
        f"{path}?seed=nk&validators=0&rate=800000")})
    await _sidecar(download_dir, lambda d: True)
    await _wait_on_disk(download_dir, 300_000)
    first.kill()
    # the machine did not reboot: every byte the dead worker wrote is good
    written = sum(p.stat().st_size for p in download_dir.glob("*.part"))
    second: WorkerProcess = start_worker()
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=90)
    assert done.state.value == "completed", (done.error, second.log()[-2000:])
    assert _sha(download_dir / done.path) == source.expected_sha256(size, "nk")
    starts = _starts(source, path)
    assert starts, ("the second worker resumed with a Range request", second.log()[-2000:])
    # from where the dead worker stopped, minus the overlap that proves it is the same file
    assert starts[0] == written - OVERLAP
    assert not [e for e in await _events(service, job.id) if e.data.get("note")]


async def test_same_length_change_after_a_kill_restarts_and_never_splices(
        service: Service, start_worker, source: SourceServer, download_dir: Path
) -> None:
    size = 3_000_000
    path = f"/bytes/{size}"
    first: WorkerProcess = start_worker()
    job, _ = await service.create(OWNER, {"url": source.url(
        f"{path}?seed=nc&key=nc&validators=0&rate=800000")})
    await _sidecar(download_dir, lambda d: True)
    await _wait_on_disk(download_dir, 300_000)
    first.kill()
    source.change("nc")  # new bytes, same length, nothing to tell it by but the bytes
    start_worker()
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=90)
    assert done.state.value == "completed", done.error
    data = (download_dir / done.path).read_bytes()
    assert data == source.content(size, "nc", version=1)  # wholly the new version
    assert _starts(source, path)[:1] and source.requests_to(path)[-1].range is None
    notes = [e for e in await _events(service, job.id) if e.data.get("note")]
    assert [(e.event, e.data["state"], e.data["note"]) for e in notes] == [
        ("state", "active", CHANGED)]
    # the note is the event's: the job object does not keep a stale one
    assert "note" not in (await service.get(OWNER, job.id)).to_public()


async def test_changed_length_between_pause_and_resume_restarts(
        service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    size = 2_000_000
    job, _ = await service.create(OWNER, {"url": source.url(
        f"/bytes/{size}?seed=ng&key=ng&validators=0&grow=5000&rate=1000000")})
    await _wait_loaded(service, job.id, 300_000)
    await service.pause(OWNER, job.id)
    source.change("ng")  # now 2 005 000 bytes
    await service.resume(OWNER, job.id)
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "completed", done.error
    assert done.sha256 == source.expected_sha256(size + 5000, "ng", version=1)
    assert done.progress.total == size + 5000
    notes = [e.data["note"] for e in await _events(service, job.id) if e.data.get("note")]
    assert notes == [CHANGED]


async def test_parallel_download_without_validator_resumes_each_segment_by_its_overlap(
        service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    size = 16 * 1024 * 1024  # four 4 MiB segments
    path = f"/bytes/{size}"
    job, _ = await service.create(OWNER, {"url": source.url(
        f"{path}?seed=n4&validators=0&rate=1500000"), "connections": 4})
    await _wait_loaded(service, job.id, 2_000_000)
    await service.pause(OWNER, job.id)
    side = await _sidecar(download_dir, lambda d: d["segments"])
    seen = len(source.requests)
    await service.resume(OWNER, job.id)
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=90)
    assert done.state.value == "completed", done.error
    assert done.sha256 == source.expected_sha256(size, "n4")
    asked = {int((r.range or "").split("=")[1].split("-")[0])
             for r in source.requests[seen:] if r.range}
    resumed = {d - min(OVERLAP, d) for start, end, d in side["segments"] if start < d < end}
    assert len(resumed) == 4 and resumed <= asked  # every segment by its own overlap


async def test_parallel_download_changed_while_paused_restarts_whole(
        service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    size = 16 * 1024 * 1024
    job, _ = await service.create(OWNER, {"url": source.url(
        f"/bytes/{size}?seed=n5&key=n5&validators=0&rate=1500000"), "connections": 4})
    await _wait_loaded(service, job.id, 2_000_000)
    await service.pause(OWNER, job.id)
    source.change("n5")
    await service.resume(OWNER, job.id)
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=90)
    assert done.state.value == "completed", done.error
    assert done.sha256 == source.expected_sha256(size, "n5", version=1)
    notes = [e.data["note"] for e in await _events(service, job.id) if e.data.get("note")]
    assert notes == [CHANGED]
