"""Faults: a worker SIGKILLed mid-download, control requests, Redis restarted, drops."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import redis.asyncio as aioredis

from bgdownload.config import Settings
from bgdownload.local.redisproc import start_redis
from bgdownload.service import Service
from tests.support.source_server import SourceServer
from tests.support.stack import WorkerProcess, wait_for_state

OWNER = "local"


async def _wait_loaded(service: Service, job_id: str, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await service.get(OWNER, job_id)).progress.loaded < at_least:
        assert time.monotonic() < deadline, "the download never got going"
        await asyncio.sleep(0.05)


async def _wait_on_disk(download_dir: Path, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum(p.stat().st_size for p in download_dir.glob("*.part")) < at_least:
        assert time.monotonic() < deadline, "nothing reached the .part file"
        await asyncio.sleep(0.05)


async def test_sigkilled_worker_is_taken_over_and_the_job_resumes(
    service: Service, start_worker, source: SourceServer, download_dir: Path
) -> None:
    size = 4_000_000
    url = source.url(f"/bytes/{size}?seed=k1&rate=800000")
    first: WorkerProcess = start_worker()
    job, _ = await service.create(OWNER, {"url": url})
    await _wait_loaded(service, job.id, 600_000)
    await _wait_on_disk(download_dir, 300_000)  # bytes the engine still buffers die with it
    first.kill()
    assert (await service.get(OWNER, job.id)).state.value == "active"
    second: WorkerProcess = start_worker()
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=90)
    assert done.state.value == "completed", (done.error, second.log())
    data = (download_dir / done.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == source.expected_sha256(size, "k1")
    ranged = source.ranged_requests("/bytes/4000000")
    assert ranged, ("the second worker resumed with a Range request", second.log()[-2000:])
    assert int(ranged[-1].range.split("=")[1].split("-")[0]) > 0


async def test_pause_keeps_the_part_and_resume_finishes(
    service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    size = 3_000_000
    url = source.url(f"/bytes/{size}?seed=p1&rate=1000000")
    job, _ = await service.create(OWNER, {"url": url})
    await _wait_loaded(service, job.id, 200_000)
    started = time.monotonic()
    paused = await service.pause(OWNER, job.id)
    assert paused.state.value == "paused"
    assert time.monotonic() - started < 5
    parts = list(download_dir.glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0
    resumed = await service.resume(OWNER, job.id)
    assert resumed.state.value == "waiting"
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "completed", done.error
    assert hashlib.sha256((download_dir / done.path).read_bytes()).hexdigest() == (
        source.expected_sha256(size, "p1")
    )
    assert source.ranged_requests(f"/bytes/{size}")


async def test_cancel_removes_everything(
    service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    job, _ = await service.create(OWNER, {"url": source.url("/bytes/3000000?seed=c1&rate=500000")})
    await _wait_loaded(service, job.id, 100_000)
    cancelled = await service.cancel(OWNER, job.id)
    assert cancelled.state.value == "cancelled"
    assert cancelled.error and cancelled.error["code"] == "cancelled"
    assert list(download_dir.iterdir()) == []


async def test_a_job_deleted_while_it_runs_is_let_go(
    service: Service, start_worker, source: SourceServer
) -> None:
    """The race past the API's delete (which cancels first): the job vanishes under its
    worker, which finds nothing to report to, lets the message go and takes the next job."""
    worker: WorkerProcess = start_worker(BGDOWNLOAD_CONCURRENCY="1")
    job, _ = await service.create(OWNER, {"url": source.url("/bytes/1500000?seed=gone&rate=1000000")})
    await _wait_loaded(service, job.id, 200_000)
    stored = await service.store.get(job.id)
    assert stored is not None
    await service.store.delete(stored)
    following, _ = await service.create(OWNER, {"url": source.url("/bytes/1000?seed=next")})
    done = await wait_for_state(service, OWNER, following.id, {"completed", "failed"})
    assert done.state.value == "completed", done.error
    assert await service.store.get(job.id) is None
    assert not await service.store.has_lease(job.id)
    log = worker.log()
    assert "was deleted while it ran" in log and "failed unexpectedly" not in log, log[-2000:]


async def test_drop_mid_body_resumes(
    service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    size = 2_000_000
    job, _ = await service.create(OWNER, {"url": source.url(f"/bytes/{size}?seed=d1&drop=2")})
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "completed", done.error
    assert done.sha256 == source.expected_sha256(size, "d1")
    assert len(source.ranged_requests(f"/bytes/{size}")) >= 1


async def test_queued_job_survives_a_redis_restart(
    tmp_path: Path, start_worker, source: SourceServer, download_dir: Path
) -> None:
    data_dir = tmp_path / "redis-aof"
    server = start_redis(data_dir, appendonly=True)
    env = {"BGDOWNLOAD_REDIS_URL": server.url}
    base = Settings.from_env({
        "BGDOWNLOAD_REDIS_URL": server.url, "BGDOWNLOAD_DIR": str(download_dir),
        "BGDOWNLOAD_ALLOW_NETWORKS": "127.0.0.0/8",
        "BGDOWNLOAD_SETTINGS_FILE": str(tmp_path / "none.env"),
    })
    try:
        service = await Service.connect(base)
        job, _ = await service.create(OWNER, {"url": source.url("/bytes/50000?seed=r1")})
        await service.close()
        client = aioredis.from_url(server.url)
        await client.execute_command("BGREWRITEAOF")
        await asyncio.sleep(0.5)
        await client.aclose()
        port = server.port
        server.stop()
        server = start_redis(data_dir, port=port, appendonly=True)
        start_worker(**env)
        service = await Service.connect(base)
        try:
            done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
            assert done.state.value == "completed", done.error
            assert done.sha256 == source.expected_sha256(50000, "r1")
        finally:
            await service.close()
    finally:
        server.stop()


async def test_priority_orders_waiting_jobs(
    service: Service, start_worker, source: SourceServer
) -> None:
    low, _ = await service.create(OWNER, {"url": source.url("/bytes/1000?seed=lo"), "priority": -5})
    mid, _ = await service.create(OWNER, {"url": source.url("/bytes/1000?seed=mid")})
    high, _ = await service.create(OWNER, {"url": source.url("/bytes/1000?seed=hi"), "priority": 9})
    start_worker(BGDOWNLOAD_CONCURRENCY="1")
    jobs = [await wait_for_state(service, OWNER, j.id, {"completed"}) for j in (low, mid, high)]
    order = sorted(jobs, key=lambda j: j.started_at)
    assert [j.id for j in order] == [high.id, mid.id, low.id]


async def test_sigterm_hands_the_job_back_at_once(
    service: Service, start_worker, source: SourceServer, download_dir: Path
) -> None:
    """A stopped worker requeues its download; the next one resumes it without waiting
    for the redelivery timeout (set to ten minutes here)."""
    size = 3_000_000
    first: WorkerProcess = start_worker(BGDOWNLOAD_REDELIVERY_TIMEOUT="600")
    job, _ = await service.create(OWNER, {"url": source.url(f"/bytes/{size}?seed=g1&rate=600000")})
    await _wait_loaded(service, job.id, 300_000)
    first.stop()
    assert first.process is not None and first.process.returncode is not None
    handed_back = await service.get(OWNER, job.id)
    assert handed_back.state.value == "waiting"
    assert list(download_dir.glob("*.part"))
    start_worker(BGDOWNLOAD_REDELIVERY_TIMEOUT="600")
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=40)
    assert done.state.value == "completed", done.error
    assert done.sha256 == source.expected_sha256(size, "g1")
    assert source.ranged_requests(f"/bytes/{size}")


async def test_redis_restart_mid_download_does_not_strand_the_job(
    tmp_path: Path, start_worker, source: SourceServer, download_dir: Path
) -> None:
    data_dir = tmp_path / "redis-aof2"
    server = start_redis(data_dir, appendonly=True)
    base = Settings.from_env({
        "BGDOWNLOAD_REDIS_URL": server.url, "BGDOWNLOAD_DIR": str(download_dir),
        "BGDOWNLOAD_ALLOW_NETWORKS": "127.0.0.0/8",
        "BGDOWNLOAD_SETTINGS_FILE": str(tmp_path / "none.env"),
    })
    size = 3_000_000
    try:
        start_worker(BGDOWNLOAD_REDIS_URL=server.url)
        service = await Service.connect(base)
        job, _ = await service.create(OWNER, {"url": source.url(f"/bytes/{size}?seed=rr&rate=600000")})
        await _wait_loaded(service, job.id, 300_000)
        await service.close()
        port = server.port
        server.stop()
        await asyncio.sleep(2)
        server = start_redis(data_dir, port=port, appendonly=True)
        service = await Service.connect(base)
        try:
            done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=90)
            assert done.state.value == "completed", done.error
            assert done.sha256 == source.expected_sha256(size, "rr")
        finally:
            await service.close()
    finally:
        server.stop()


async def test_sigkilled_worker_resumes_every_segment_of_a_parallel_download(
    service: Service, start_worker, source: SourceServer, download_dir: Path
) -> None:
    size = 16 * 1024 * 1024  # four 4 MiB segments
    url = source.url(f"/bytes/{size}?seed=seg&rate=1500000")  # per connection
    first: WorkerProcess = start_worker()
    job, _ = await service.create(OWNER, {"url": url, "connections": 4})
    await _wait_loaded(service, job.id, 4_000_000)
    await asyncio.sleep(1.5)  # the sidecar records segment progress about once a second
    first.kill()
    sidecar = next(download_dir.glob("*.part.json"))
    segments = json.loads(sidecar.read_text())["segments"]
    assert len(segments) == 4 and all(durable > start for start, _end, durable in segments)
    start_worker()
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"}, timeout=90)
    assert done.state.value == "completed", done.error
    assert done.sha256 == source.expected_sha256(size, "seg")
    resumed_at = {
        int(r.range.split("=")[1].split("-")[0]) for r in source.ranged_requests(f"/bytes/{size}")
    }
    # every segment went on from where the sidecar said it was, not from its start
    assert {durable for _s, _e, durable in segments} <= resumed_at
