"""Files belong to owners (docs/api.md §17): owner folders, reserved names, deletes that
touch only what a job created — two owners against a real server (Quart, real Service on
a real Redis) and real worker processes."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from bgdownload.config import Settings
from bgdownload.errors import JobGone
from bgdownload.server import create_app
from bgdownload.service import Service
from tests.support.source_server import SourceServer
from tests.support.stack import WorkerProcess

ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
OWNERS = {"alice": ALICE, "bob": BOB}
BASE = "/api/v1/downloads"


@pytest.fixture
async def client(service: Service, stack_settings: Settings) -> AsyncIterator[Client]:
    settings = stack_settings.replace(tokens={"tok-alice": "alice", "tok-bob": "bob"})
    app = create_app(settings, service)
    async with app.test_app():
        yield app.test_client()


async def create(client: Client, who: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post(BASE, json=fields, headers=who)
    assert response.status_code == 202, await response.get_data(as_text=True)
    return await response.get_json()


async def get(client: Client, who: dict[str, str], job_id: str) -> dict[str, Any]:
    response = await client.get(f"{BASE}/{job_id}", headers=who)
    assert response.status_code == 200
    return await response.get_json()


async def until(client: Client, who: dict[str, str], job_id: str,
                ready: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
    """Poll the job until ``ready`` says so; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        job = await get(client, who, job_id)
        if ready(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} never got there: {job}"
        await asyncio.sleep(0.05)


def state_in(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda job: job["state"] in states


async def control(client: Client, who: dict[str, str], job_id: str, action: str) -> None:
    response = await client.post(f"{BASE}/{job_id}/{action}", headers=who)
    assert response.status_code in (200, 202), await response.get_data(as_text=True)


async def bobs_paused_download(client: Client, source: SourceServer,
                               download_dir: Path) -> tuple[dict[str, Any], Path]:
    """Bob's ``bob-report.pdf``, some bytes in, paused: its ``.part`` waits on disk."""
    job = await create(client, BOB, url=source.url("/bytes/600000?seed=bob&rate=200000"),
                       filename="bob-report.pdf")
    job = await until(client, BOB, job["id"],
                      lambda j: j["state"] == "active" and j["progress"]["loaded"] > 0)
    assert job["path"] == "bob/bob-report.pdf"
    await control(client, BOB, job["id"], "pause")
    part = download_dir / "bob" / "bob-report.pdf.part"
    assert part.stat().st_size > 0
    return job, part


async def bob_finishes(client: Client, source: SourceServer, job: dict[str, Any],
                       download_dir: Path) -> None:
    await control(client, BOB, job["id"], "resume")
    done = await until(client, BOB, job["id"], state_in("completed", "failed"))
    assert done["state"] == "completed", done["error"]
    assert done["path"] == "bob/bob-report.pdf"
    data = (download_dir / "bob" / "bob-report.pdf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == source.expected_sha256(600000, "bob")


async def test_each_owner_downloads_into_a_folder_of_its_own(
    client: Client, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    jobs = {who: await create(client, headers, url=source.url(f"/bytes/3000?seed={who}"),
                              filename="report.pdf")
            for who, headers in OWNERS.items()}
    for who, headers in OWNERS.items():
        done = await until(client, headers, jobs[who]["id"], state_in("completed", "failed"))
        assert done["state"] == "completed", done["error"]
        assert (done["filename"], done["path"]) == ("report.pdf", f"{who}/report.pdf")
        served = await client.get(f"{BASE}/{done['id']}/file", headers=headers)
        assert await served.get_data() == source.content(3000, who)
        other = BOB if who == "alice" else ALICE
        assert (await client.get(f"{BASE}/{done['id']}/file", headers=other)).status_code == 404
    assert sorted(p.name for p in download_dir.iterdir()) == ["alice", "bob"]


@pytest.mark.parametrize("attacker", ["alice", "bob"])
async def test_deleting_a_failed_job_never_deletes_the_file_it_only_asked_for(
    client: Client, worker: WorkerProcess, source: SourceServer, download_dir: Path,
    attacker: str,
) -> None:
    bob = await create(client, BOB, url=source.url("/bytes/5000?seed=r"),
                       filename="bob-report.pdf")
    bob = await until(client, BOB, bob["id"], state_in("completed"))
    report = download_dir / bob["path"]
    # the same name: in Bob's own folder when Bob asks again, in Alice's when she does
    who = OWNERS[attacker]
    failing = await create(client, who, url=source.url("/status/404"), filename="bob-report.pdf")
    failed = await until(client, who, failing["id"], state_in("failed", "completed"))
    assert failed["error"]["code"] == "http_error"
    response = await client.delete(f"{BASE}/{failing['id']}?delete_file=true", headers=who)
    assert response.status_code == 204
    assert report.read_bytes() == source.content(5000, "r")
    served = await client.get(f"{BASE}/{bob['id']}/file", headers=BOB)
    assert served.status_code == 200 and await served.get_data() == source.content(5000, "r")


@pytest.mark.parametrize("attacker", ["alice", "bob"])
async def test_a_job_failing_on_a_blocked_redirect_leaves_a_running_download_alone(
    client: Client, worker: WorkerProcess, source: SourceServer, download_dir: Path,
    attacker: str,
) -> None:
    bob, part = await bobs_paused_download(client, source, download_dir)
    who = OWNERS[attacker]
    job = await create(client, who, url=source.redirect_url("http://10.0.0.1/x"),
                       filename="bob-report.pdf")
    failed = await until(client, who, job["id"], state_in("failed", "completed"))
    assert failed["error"]["code"] == "blocked_destination"
    assert part.stat().st_size > 0
    await bob_finishes(client, source, bob, download_dir)


@pytest.mark.parametrize("attacker", ["alice", "bob"])
async def test_cancelling_a_waiting_job_leaves_a_running_download_alone(
    client: Client, worker: WorkerProcess, start_worker: Callable[..., WorkerProcess],
    source: SourceServer, download_dir: Path, attacker: str,
) -> None:
    bob, part = await bobs_paused_download(client, source, download_dir)
    worker.stop()  # nobody picks the next job up: it stays waiting
    who = OWNERS[attacker]
    job = await create(client, who, url=source.url("/bytes/1000"), filename="bob-report.pdf")
    await control(client, who, job["id"], "pause")
    await control(client, who, job["id"], "cancel")
    response = await client.delete(f"{BASE}/{job['id']}?delete_file=true", headers=who)
    assert response.status_code == 204
    assert part.stat().st_size > 0
    start_worker()
    await bob_finishes(client, source, bob, download_dir)


async def test_a_reserved_name_is_kept_through_cancel_and_retry(
    client: Client, worker: WorkerProcess, source: SourceServer, download_dir: Path
) -> None:
    first = await create(client, ALICE, url=source.url("/bytes/400000?seed=k&rate=100000"),
                         filename="keep.bin")
    first = await until(client, ALICE, first["id"],
                        lambda j: j["state"] == "active" and j["path"] is not None)
    await control(client, ALICE, first["id"], "cancel")
    assert not (download_dir / "alice" / "keep.bin.part").exists()  # partial data gone
    # the name stays the first job's: a second job asking for it gets the next one
    second = await create(client, ALICE, url=source.url("/bytes/100?seed=k2"), filename="keep.bin")
    second = await until(client, ALICE, second["id"], state_in("completed", "failed"))
    assert second["path"] == "alice/keep (1).bin"
    await control(client, ALICE, first["id"], "retry")
    first = await until(client, ALICE, first["id"], state_in("completed", "failed"))
    assert first["state"] == "completed", first["error"]
    assert first["path"] == "alice/keep.bin"
    response = await client.delete(f"{BASE}/{first['id']}?delete_file=true", headers=ALICE)
    assert response.status_code == 204
    assert sorted(p.name for p in (download_dir / "alice").iterdir()) == ["keep (1).bin"]


async def test_a_name_is_held_by_one_job_until_that_job_is_gone(service: Service) -> None:
    store = service.store
    url = {"url": "http://127.0.0.1:9/never-fetched"}
    a, b, c = [(await service.create("alice", url))[0] for _ in range(3)]
    assert await store.name_file(a.id, None, "x.bin", "alice/x.bin")
    assert not await store.name_file(b.id, None, "x.bin", "alice/x.bin")
    assert await store.name_file(b.id, 0, "x.bin", "alice/x (1).bin") is True  # batch slot
    assert await store.owned_paths(await service.get("alice", a.id)) == ["alice/x.bin"]
    assert await store.owned_paths(await service.get("alice", c.id)) == []
    await store.delete(await service.get("alice", a.id))  # its names go with it
    assert await store.name_file(c.id, None, "x.bin", "alice/x.bin")
    await store.redis.delete(f"bgd:job:{c.id}")  # expired: a gone job holds nothing
    assert await store.name_file(b.id, None, "x.bin", "alice/x.bin")
    with pytest.raises(JobGone):
        await store.name_file(c.id, None, "y.bin", "alice/y.bin")
