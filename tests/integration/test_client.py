"""The Python client against a real server + worker + Redis.

Needs a fixture ``api``: the base URL (``http://127.0.0.1:PORT``) of a running
Quart server in single-user mode with one worker, on the ``redis_url`` Redis and
the ``download_dir`` root, with the integration ``TEST_ENV`` (loopback sources allowed).
"""

from __future__ import annotations

import hashlib

import pytest

from bgdownload import errors
from bgdownload.client import AsyncClient, Client, Journal, protocol
from bgdownload.models import JobState

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def client(api: str, tmp_path) -> Client:
    with Client(api, journal=Journal(tmp_path / "journal.jsonl")) as c:
        yield c


def test_download_wait_and_file_digest(client, source, download_dir):
    url = source.url("/bytes/300000?seed=c&rate=600000")
    job = client.download(url, filename="c.bin")
    assert job.state in (JobState.WAITING, JobState.ACTIVE)
    assert job.wait(timeout=60, progress=False) is job
    assert job.state is JobState.COMPLETED
    assert job.sha256 == source.expected_sha256(300000, "c")
    assert job.progress.loaded == job.progress.total == 300000
    data = (download_dir / job.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == job.sha256


def test_events_end_after_the_terminal_state_without_gaps(client, source):
    job = client.download(source.url("/bytes/200000?seed=e&rate=400000"))
    events = list(job.events())
    assert events[0].event == "snapshot"
    assert events[-1].event == "state" and events[-1].data["state"] == "completed"
    orders = [protocol.event_order(e.id) for e in events]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)


def test_failed_download_raises_with_the_job_error_code(client, source):
    job = client.download(source.url("/bytes/1000?status=404&times=-1"))
    with pytest.raises(errors.DownloadFailed) as info:
        job.wait(timeout=60, progress=False)
    assert info.value.code == "http_error"
    assert job.error is not None and job.error.code == "http_error"


def test_pause_resume_cancel_and_invalid_state(client, source):
    job = client.download(source.url("/bytes/2000000?seed=p&rate=100000"))
    for event in job.events():
        if event.event == "progress" and event.data.get("loaded"):
            break
    assert job.pause().state is JobState.PAUSED
    assert job.resume().state in (JobState.WAITING, JobState.ACTIVE)
    assert job.cancel().state is JobState.CANCELLED
    with pytest.raises(errors.InvalidState):
        job.pause()
    with pytest.raises(errors.DownloadFailed) as info:
        job.wait(progress=False)
    assert info.value.code == "cancelled"


def test_attach_from_another_client_and_from_the_journal(api, client, source, tmp_path):
    job = client.download(source.url("/bytes/2000000?seed=a&rate=200000"))
    with Client(api, journal=Journal(tmp_path / "journal.jsonl")) as later:
        assert later.attach(job.id).id == job.id
        assert [j.id for j in later.attach()] == [job.id]
        later.cancel(job.id)
    with pytest.raises(errors.NotFound):
        client.attach("00000000-0000-4000-8000-000000000000")


def test_a_repeated_idempotency_key_returns_the_first_job(client, source):
    url = source.url("/bytes/1000?seed=i")
    first = client._run(client._async._send(protocol.create_call(url, idempotency_key="k1")))
    again = client._run(client._async._send(protocol.create_call(url, idempotency_key="k1")))
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]


def test_jobs_lists_with_a_state_filter(client, source):
    job = client.download(source.url("/bytes/1000?seed=l"))
    job.wait(timeout=60, progress=False)
    assert job.id in {j.id for j in client.jobs(state="completed")}
    assert job.id not in {j.id for j in client.jobs(state="active,waiting")}


async def test_async_client(api, source, tmp_path):
    async with AsyncClient(api, journal=False) as client:
        job = await client.download(source.url("/bytes/50000?seed=z"))
        await job.wait(timeout=60, progress=False)
        assert job.state is JobState.COMPLETED
        assert (await client.health())["redis"] == "ok"
