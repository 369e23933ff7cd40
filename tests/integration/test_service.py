"""The service layer: validation, isolation, control rules, batches, streams."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from bgdownload.config import Settings
from bgdownload.errors import (
    BlockedDestination,
    InvalidRequest,
    InvalidState,
    InvalidURL,
    NotFound,
    RateLimited,
)
from bgdownload.service import Service
from tests.support.source_server import SourceServer
from tests.support.stack import WorkerProcess, wait_for_state

OWNER = "alice"


def files_under(root: Path) -> list[Path]:
    """Every file in the download root, owner folders included."""
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, InvalidRequest),
        ({"url": 5}, InvalidRequest),
        ({"url": "ftp://example.org/x"}, InvalidURL),
        ({"url": "http://user:pw@example.org/x"}, InvalidURL),
        ({"url": "http://10.0.0.1/x"}, BlockedDestination),
        ({"url": "http://2130706433/x"}, None),  # loopback, allowed in tests: see below
        ({"url": "http://example.org/x", "sha256": "abc"}, InvalidRequest),
        ({"url": "http://example.org/x", "priority": "high"}, InvalidRequest),
        ({"url": "http://example.org/x", "max_speed": 0}, InvalidRequest),
        ({"url": "http://example.org/x", "connections": 100}, InvalidRequest),
        ({"url": "http://example.org/x", "metadata": [1]}, InvalidRequest),
        ({"url": "http://example.org/x", "metadata": {"a": "x" * 17000}}, InvalidRequest),
        ({"url": "http://example.org/x", "headers": {"X": "a\r\nb"}}, InvalidRequest),
        ({"url": "http://example.org/x", "files": [{"url": "http://example.org/y"}]}, InvalidRequest),
        ({"files": [{"nourl": 1}]}, InvalidRequest),
    ],
)
async def test_bad_create_requests_are_refused(service: Service, data: dict, error: type | None) -> None:
    if error is None:
        job, _ = await service.create(OWNER, data)
        assert job.url == data["url"]
        return
    with pytest.raises(error):
        await service.create(OWNER, data)
    jobs, _ = await service.list(OWNER)
    assert jobs == []


async def test_blocked_destination_without_allow_networks(stack_settings: Settings) -> None:
    svc = await Service.connect(stack_settings.replace(allow_networks=()))
    try:
        for url in ("http://127.0.0.1/x", "http://[::ffff:127.0.0.1]/", "http://0x7f.1/",
                    "http://169.254.169.254/latest", "http://localhost/"):
            with pytest.raises(BlockedDestination):
                await svc.create(OWNER, {"url": url})
    finally:
        await svc.close()


async def test_jobs_are_invisible_to_other_owners(service: Service, source: SourceServer) -> None:
    job, _ = await service.create(OWNER, {"url": source.url("/bytes/10")})
    with pytest.raises(NotFound):
        await service.get("bob", job.id)
    for action in (service.cancel, service.pause, service.resume, service.retry):
        with pytest.raises(NotFound):
            await action("bob", job.id)
    with pytest.raises(NotFound):
        await service.delete("bob", job.id)
    assert (await service.list("bob"))[0] == []
    with pytest.raises(NotFound):
        await service.get(OWNER, "not-a-uuid")


async def test_control_in_the_wrong_state_is_invalid_state(service: Service, source: SourceServer) -> None:
    job, _ = await service.create(OWNER, {"url": source.url("/bytes/10")})
    with pytest.raises(InvalidState):
        await service.resume(OWNER, job.id)
    with pytest.raises(InvalidState):
        await service.retry(OWNER, job.id)
    paused = await service.pause(OWNER, job.id)
    assert paused.state.value == "paused"
    with pytest.raises(InvalidState):
        await service.pause(OWNER, job.id)
    cancelled = await service.cancel(OWNER, job.id)
    assert cancelled.state.value == "cancelled"
    with pytest.raises(InvalidState):
        await service.cancel(OWNER, job.id)
    retried = await service.retry(OWNER, job.id)
    assert retried.state.value == "waiting" and retried.error is None


async def test_idempotency_key_and_rate_limit(stack_settings: Settings, source: SourceServer) -> None:
    svc = await Service.connect(stack_settings.replace(rate_limit=(2, 60.0)))
    try:
        first, created = await svc.create(OWNER, {"url": source.url("/bytes/1")}, idempotency_key="a")
        again, created_again = await svc.create(OWNER, {"url": source.url("/bytes/1")}, idempotency_key="a")
        assert created and not created_again and again.id == first.id
        await svc.create(OWNER, {"url": source.url("/bytes/2")})
        with pytest.raises(RateLimited) as err:
            await svc.create(OWNER, {"url": source.url("/bytes/3")})
        assert err.value.retry_after > 0
        await svc.create("bob", {"url": source.url("/bytes/3")})  # budgets are per owner
    finally:
        await svc.close()


async def test_batch_job_with_a_failing_file_ends_partial(
    service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    files = [
        {"url": source.url("/bytes/5000?seed=b1"), "filename": "one.bin"},
        {"url": source.url("/status/404")},
        {"url": source.url("/bytes/7000?seed=b2"), "sha256": source.expected_sha256(7000, "b2")},
    ]
    job, _ = await service.create(OWNER, {"files": files})
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "failed" and done.error and done.error["code"] == "partial"
    states = [f.state.value for f in done.files]
    assert states == ["completed", "failed", "completed"]
    assert (download_dir / OWNER / "one.bin").read_bytes() == source.content(5000, "b1")
    assert done.files[2].sha256 == source.expected_sha256(7000, "b2")
    assert done.progress.loaded == 12000


async def test_batch_job_completes_and_sums_progress(
    service: Service, worker: WorkerProcess, source: SourceServer
) -> None:
    job, _ = await service.create(
        OWNER, {"files": [{"url": source.url(f"/bytes/{n}?seed=s{n}")} for n in (1000, 2000, 3000)]}
    )
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.state.value == "completed", done.error
    assert done.progress.loaded == done.progress.total == 6000
    assert all(f.sha256 for f in done.files)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/bytes/300000?seed=t1", "too_large"),  # Content-Length says too much
        ("/bytes/300000?seed=t2&chunked=1", "too_large"),  # stream passes the cap
    ],
)
async def test_size_cap(stack_settings: Settings, start_worker, source: SourceServer,
                        download_dir: Path, path: str, code: str) -> None:
    start_worker(BGDOWNLOAD_MAX_BYTES="100000")
    svc = await Service.connect(stack_settings)
    try:
        job, _ = await svc.create(OWNER, {"url": source.url(path)})
        done = await wait_for_state(svc, OWNER, job.id, {"completed", "failed"})
        assert done.state.value == "failed" and done.error and done.error["code"] == code
        assert files_under(download_dir) == []
    finally:
        await svc.close()


async def test_checksum_mismatch_fails_and_deletes(
    service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    job, _ = await service.create(OWNER, {"url": source.url("/bytes/1000?seed=x"), "sha256": "0" * 64})
    done = await wait_for_state(service, OWNER, job.id, {"completed", "failed"})
    assert done.error and done.error["code"] == "checksum_mismatch"
    assert files_under(download_dir) == []


async def test_short_body_never_completes(stack_settings: Settings, start_worker,
                                          source: SourceServer) -> None:
    start_worker(BGDOWNLOAD_RETRIES="1")
    svc = await Service.connect(stack_settings)
    try:
        job, _ = await svc.create(OWNER, {"url": source.url("/bytes/50000?seed=sh&short=20000")})
        done = await wait_for_state(svc, OWNER, job.id, {"completed", "failed"})
        assert done.state.value == "failed" and done.error and done.error["code"] == "network_error"
    finally:
        await svc.close()


async def test_file_path_delete_and_clash_names(
    service: Service, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    a, _ = await service.create(OWNER, {"url": source.url("/bytes/10?seed=n1"), "filename": "same.txt"})
    a = await wait_for_state(service, OWNER, a.id, {"completed"})
    b, _ = await service.create(OWNER, {"url": source.url("/bytes/10?seed=n2"), "filename": "same.txt"})
    b = await wait_for_state(service, OWNER, b.id, {"completed"})
    assert (a.path, b.path) == ("alice/same.txt", "alice/same (1).txt")
    path = await service.file_path(OWNER, b.id)
    assert path == download_dir / "alice" / "same (1).txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == b.sha256
    await service.delete(OWNER, b.id, delete_file=True)
    assert not path.exists() and (download_dir / "alice" / "same.txt").exists()
    with pytest.raises(NotFound):
        await service.get(OWNER, b.id)
    await service.delete(OWNER, a.id)
    assert (download_dir / "alice" / "same.txt").exists()


async def test_owner_events_follow_every_job(
    service: Service, worker: WorkerProcess, source: SourceServer
) -> None:
    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        async for event in service.owner_events(OWNER):
            seen.append((event.data["id"], event.event))
            done = {i for i, e in seen if e == "state"}
            if len(done) == 2 and sum(1 for _, e in seen if e == "state") >= 6:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    a, _ = await service.create(OWNER, {"url": source.url("/bytes/1000?seed=o1")})
    b, _ = await service.create(OWNER, {"url": source.url("/bytes/1000?seed=o2")})
    await asyncio.wait_for(task, 30)
    assert {i for i, _ in seen} == {a.id, b.id}


async def test_stream_of_a_finished_job_ends_after_a_reconnect(
    service: Service, worker: WorkerProcess, source: SourceServer
) -> None:
    job, _ = await service.create(OWNER, {"url": source.url("/bytes/1000?seed=e1")})
    await wait_for_state(service, OWNER, job.id, {"completed"})
    events = [e async for e in service.job_events(OWNER, job.id, last_event_id="0-0")]
    final = events[-1]
    assert final.event == "state" and final.data["state"] == "completed"
    # Reconnecting with the id of the final event: nothing more, and the stream ends.
    again = await asyncio.wait_for(
        _collect(service.job_events(OWNER, job.id, last_event_id=final.id)), 10
    )
    assert again == []


async def test_queue_message_id_is_kept_and_owner_position_prevents_gaps(
    service: Service, source: SourceServer
) -> None:
    position = await service.owner_position(OWNER)
    job, _ = await service.create(OWNER, {"url": source.url("/bytes/10")})
    assert job.queue_id and job.queue_id != job.id
    stored = await service.get(OWNER, job.id)
    assert stored.queue_id == job.queue_id and "queue_id" not in stored.to_public()
    replay = service.owner_events(OWNER, last_event_id=position)
    first = await asyncio.wait_for(replay.__anext__(), 5)
    await replay.aclose()
    assert first.data["id"] == job.id and first.data["state"] == "waiting"


async def _collect(events) -> list:  # type: ignore[no-untyped-def]
    return [e async for e in events]


async def test_a_refused_create_leaves_no_job_and_no_queue_message(
    stack_settings: Settings, source: SourceServer, redis
) -> None:
    from bgdownload import keys

    svc = await Service.connect(stack_settings.replace(rate_limit=(1, 60.0)))
    try:
        job, _ = await svc.create(OWNER, {"url": source.url("/bytes/1")})
        assert await redis.xlen(keys.TASK_STREAM) == 1
        with pytest.raises(RateLimited):
            await svc.create(OWNER, {"url": source.url("/bytes/2")})
        assert await redis.xlen(keys.TASK_STREAM) == 1
        assert [j.id for j in (await svc.list(OWNER))[0]] == [job.id]
        assert (await svc.stats()).queue_depth == 1
    finally:
        await svc.close()
