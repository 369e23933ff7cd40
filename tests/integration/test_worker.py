"""The worker end to end: a real Redis, real taskiq worker processes, a real source server."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from bgdownload.service import Service
from tests.support.source_server import SourceServer
from tests.support.stack import WorkerProcess, wait_for_state

OWNER = "local"


async def test_download_completes_with_verified_file(
    service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    url = source.url("/bytes/3000000?seed=w1")
    job, created = await service.create(
        OWNER, {"url": url, "sha256": source.expected_sha256(3_000_000, "w1")}
    )
    assert created and job.state.value == "waiting"
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "completed", (done.error, worker.log())
    path = download_dir / done.path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == done.sha256
    assert done.sha256 == source.expected_sha256(3_000_000, "w1")
    assert done.progress.loaded == done.progress.total == 3_000_000
    assert not list(download_dir.glob("*.part*"))


async def test_event_stream_tells_the_whole_story(
    service: Service, worker: WorkerProcess, source: SourceServer
) -> None:
    url = source.url("/bytes/2000000?seed=w2&rate=2000000")
    job, _ = await service.create(OWNER, {"url": url})
    events = []

    async def collect() -> None:
        async for event in service.job_events(OWNER, job.id):
            events.append(event)

    await asyncio.wait_for(collect(), 60)
    assert events[0].event == "snapshot"
    states = [e.data["state"] for e in events if e.event == "state"]
    assert states[-1] == "completed"
    assert "active" in states
    progress = [e for e in events if e.event == "progress"]
    assert progress, "a throttled 1 s download publishes progress"
    loaded = [e.data["loaded"] for e in progress]
    assert loaded == sorted(loaded)
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    # Replaying after the first event gives exactly the rest, no gap, no duplicate.
    replay = [e async for e in service.job_events(OWNER, job.id, last_event_id=events[1].id)]
    assert [e.id for e in replay] == ids[2:]


async def test_404_fails_fast_without_retries(
    service: Service, worker: WorkerProcess, source: SourceServer
) -> None:
    job, _ = await service.create(OWNER, {"url": source.url("/status/404")})
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "failed"
    assert done.error and done.error["code"] == "http_error" and "404" in done.error["message"]
    assert done.attempts == 1
    assert len(source.requests_to("/status/404")) == 1


async def test_503_twice_then_success(
    service: Service, worker: WorkerProcess, source: SourceServer
) -> None:
    url = source.url("/bytes/100000?seed=w3&status=503&times=2")
    job, _ = await service.create(OWNER, {"url": url})
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "completed", done.error
    assert done.attempts == 3
    history = [
        e.data async for e in service.job_events(OWNER, job.id, last_event_id="0-0")
        if e.event == "state"
    ]
    retries = [h for h in history if h["state"] == "waiting" and h["error"]]
    assert len(retries) == 2
    assert all(r["error"]["code"] == "http_error" for r in retries)
