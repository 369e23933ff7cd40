"""Redis restarted under a real stack (docs/api.md §11 "Redis restarts").

A Redis with ``appendonly yes`` and ``appendfsync always`` on a free port, a real
``taskiq worker`` and a real ``bgdownload serve`` process, the test source
server. A thread polls the API the whole time: no answer may be a ``500``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as syncredis

from bgdownload import keys
from bgdownload.local.redisproc import find_redis_binary, free_port, redis_command, wait_for_port
from bgdownload.models import Job, JobState, Progress
from bgdownload.store import Store, open_redis
from tests.support.source_server import SourceServer

pytestmark = pytest.mark.slow

API = "/api/v1"


@dataclass
class DurableRedis:
    """A Redis whose every write is on disk before it answers; stopped and started again."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> DurableRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = redis_command(find_redis_binary(), port=self.port, data_dir=self.data_dir,
                            appendonly=True)
        cmd[cmd.index("--appendfsync") + 1] = "always"
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(15)

    def restart(self, signum: int, *, down_for: float = 0.0) -> None:
        self.stop(signum)
        if down_for:
            time.sleep(down_for)  # the outage itself is what is tested
        self.start()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    server = DurableRedis(tmp_path / "redis-data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stack(durable_redis: DurableRedis, start_worker, start_server) -> str:  # type: ignore[no-untyped-def]
    """Base URL of an API server and a worker, both on the durable Redis."""
    env = {"BGDOWNLOAD_REDIS_URL": durable_redis.url}
    start_worker(BGDOWNLOAD_CONCURRENCY="16", **env)
    return str(start_server(**env).url)


class ApiPoller(threading.Thread):
    """GETs a listing, one job and ``/healthz`` in a loop and records every answer."""

    def __init__(self, base: str, paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.paths = paths
        self.answers: list[tuple[str, int, str | None]] = []
        self.failures: list[str] = []
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self._done.is_set():
                for path in self.paths:
                    try:
                        reply = client.get(path)
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{path}: {exc!r}")
                        continue
                    self.answers.append((path, reply.status_code,
                                         reply.headers.get("Retry-After")))
                self._done.wait(0.05)

    def finish(self) -> None:
        self._done.set()
        self.join(60)

    def statuses(self) -> set[int]:
        return {status for _, status, _ in self.answers}


def wait_until(check: Any, what: str, timeout: float) -> Any:
    """Poll ``check()`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def jobs_of(client: httpx.Client) -> list[dict[str, Any]]:
    """Every job of the owner (one page of up to 500); none while Redis is away."""
    reply = client.get(f"{API}/downloads", params={"limit": "500"})
    if reply.status_code != 200:
        return []  # Redis still away: the caller asks again
    body = reply.json()
    assert body["next"] is None
    return list(body["items"])


def busy_and_progressing(client: httpx.Client, done: int, running: int) -> bool:
    """At least ``done`` jobs completed and ``running`` active (one listing)."""
    states = Counter(job["state"] for job in jobs_of(client))
    return states["completed"] >= done and states["active"] >= running


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_redis_restart_under_load_loses_and_duplicates_nothing(
    signum: int, stack: str, durable_redis: DurableRedis, source: SourceServer,
    download_dir: Path,
) -> None:
    size, count = 16_000, 300
    client = httpx.Client(base_url=stack, timeout=30)
    poller = ApiPoller(stack, [f"{API}/downloads?limit=5", "/healthz"])
    poller.start()
    try:
        ids = {}
        for i in range(count):
            reply = client.post(f"{API}/downloads", json={
                "url": source.url(f"/bytes/{size}?seed=L{i}&rate=40000"),
                "filename": f"f{i:03}.bin",
            })
            assert reply.status_code == 202, reply.text
            ids[reply.json()["id"]] = i
        wait_until(lambda: busy_and_progressing(client, 30, 4),
                   "30 jobs completed while others are active", 40)
        durable_redis.restart(signum)
        jobs = wait_until(
            lambda: (j := jobs_of(client)) and all(x["state"] in ("completed", "failed")
                                                   for x in j) and j,
            "every job to finish", 50,
        )
    finally:
        poller.finish()
        client.close()
    assert len(jobs) == count
    failed = [(j["filename"], j["error"]) for j in jobs if j["state"] != "completed"]
    assert failed == []
    for job in jobs:
        i = ids[job["id"]]
        assert job["filename"] == f"f{i:03}.bin"
        assert job["sha256"] == source.expected_sha256(size, f"L{i}")
    on_disk = sorted(p.name for p in download_dir.iterdir())
    assert on_disk == sorted(f"f{i:03}.bin" for i in range(count))  # no "(1)", no .part
    assert poller.failures == []
    assert 500 not in poller.statuses(), [a for a in poller.answers if a[1] >= 500][:5]


def test_redis_away_for_ten_seconds_is_503_with_retry_after_then_recovers(
    stack: str, durable_redis: DurableRedis, source: SourceServer, download_dir: Path,
) -> None:
    size = 1_000_000
    with httpx.Client(base_url=stack, timeout=30) as client:
        reply = client.post(f"{API}/downloads", json={
            "url": source.url(f"/bytes/{size}?seed=away&rate=100000"), "filename": "away.bin",
        })
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["id"]
        wait_until(lambda: client.get(f"{API}/downloads/{job_id}").json()["progress"]["loaded"]
                   > 100_000, "the download to move", 30)
        poller = ApiPoller(stack, [f"{API}/downloads/{job_id}", f"{API}/downloads?limit=5"])
        poller.start()
        try:
            durable_redis.restart(signal.SIGKILL, down_for=10)
            # recovers by itself: the API answers again without anything restarted but Redis
            wait_until(lambda: client.get(f"{API}/downloads/{job_id}").status_code == 200,
                       "the API to answer again", 15)
            done = wait_until(
                lambda: (j := client.get(f"{API}/downloads/{job_id}").json())["state"]
                in ("completed", "failed") and j,
                "the job to finish", 40,
            )
        finally:
            poller.finish()
    unavailable = [a for a in poller.answers if a[1] == 503]
    assert unavailable, "no request saw Redis away"
    assert all(retry_after and int(retry_after) >= 1 for _, _, retry_after in unavailable)
    assert poller.statuses() <= {200, 503}
    assert poller.answers[-1][1] == 200
    assert poller.failures == []
    assert done["state"] == "completed", done["error"]
    assert done["sha256"] == source.expected_sha256(size, "away")
    assert sorted(p.name for p in download_dir.iterdir()) == ["away.bin"]


async def _read_events(base: str, job_id: str, into: list[dict[str, Any]]) -> None:
    """One SSE connection to the job's events, read until the stream ends."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(60, read=60)) as client,
        client.stream("GET", f"{API}/downloads/{job_id}/events") as reply,
    ):
        assert reply.status_code == 200
        block: dict[str, str] = {}
        async for line in reply.aiter_lines():
            if line == "":
                if "event" in block:
                    into.append(block)
                block = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                block[name] = value


def test_an_sse_client_sees_every_event_once_across_a_restart(
    stack: str, durable_redis: DurableRedis, source: SourceServer,
) -> None:
    size = 1_500_000
    with httpx.Client(base_url=stack, timeout=30) as client:
        reply = client.post(f"{API}/downloads", json={
            "url": source.url(f"/bytes/{size}?seed=sse&rate=150000"), "filename": "sse.bin",
        })
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["id"]
    events: list[dict[str, Any]] = []

    async def scenario() -> None:
        reader = asyncio.create_task(_read_events(stack, job_id, events))
        async with asyncio.timeout(30):
            while not any(e["event"] == "progress" for e in events):
                await asyncio.sleep(0.05)
        await asyncio.to_thread(durable_redis.restart, signal.SIGKILL, down_for=2)
        restarted_ms.append(int(time.time() * 1000))
        await asyncio.wait_for(reader, 60)  # the one connection lasts to the terminal event

    restarted_ms: list[int] = []
    asyncio.run(scenario())
    assert events[0]["event"] == "snapshot"
    final = json.loads(events[-1]["data"])
    assert (events[-1]["event"], final["state"]) == ("state", "completed"), final
    assert final["sha256"] == source.expected_sha256(size, "sse")
    got = [e["id"] for e in events[1:]]
    stored = syncredis.Redis.from_url(durable_redis.url, decode_responses=True)
    try:
        after = events[0]["id"]
        kept = [entry_id for entry_id, _ in stored.xrange(keys.job_events(job_id),
                                                          min=f"({after}")]
    finally:
        stored.close()
    assert got == kept  # every event after the snapshot, in order, none twice
    # and the same connection carried events written after Redis came back
    assert any(int(e["id"].split("-")[0]) > restarted_ms[0] for e in events)


class ReplyCutter:
    """A TCP proxy to Redis that loses one reply on purpose.

    Once :meth:`arm` is given a marker, the next command that contains it reaches
    Redis and runs, but the proxy closes the client's connection instead of passing
    the reply on: what a Redis dying right after a write looks like to the client.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.marker: bytes | None = None
        self.cut = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def arm(self, marker: str) -> None:
        self.marker = marker.encode()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        doomed = asyncio.Event()

        async def to_redis() -> None:
            while chunk := await reader.read(65536):
                if self.marker is not None and self.marker in chunk:
                    self.marker = None
                    doomed.set()
                up_writer.write(chunk)
                await up_writer.drain()

        async def to_client() -> None:
            while chunk := await up_reader.read(65536):
                if doomed.is_set():
                    self.cut += 1
                    return  # the reply is dropped with the connection
                writer.write(chunk)
                await writer.drain()

        tasks = [asyncio.create_task(to_redis()), asyncio.create_task(to_client())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        writer.close()
        up_writer.close()


@pytest.fixture
async def cutter_store(redis_url: str) -> AsyncIterator[tuple[ReplyCutter, Store]]:
    cutter = ReplyCutter(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    store = Store(open_redis(await cutter.start()), retention=60)
    try:
        yield cutter, store
    finally:
        await store.aclose()
        await cutter.close()


def _job() -> Job:
    return Job(id=uuid.uuid4().hex, owner="cut", url="http://example.org/f")


async def _state_events(store: Store, job_id: str) -> list[str]:
    return [e.data["state"] for e in await store.job_events_after(job_id, "0-0")
            if e.event == "state"]


async def test_writes_repeated_after_a_lost_reply_apply_once(
    cutter_store: tuple[ReplyCutter, Store],
) -> None:
    """redis-py sends a write again when its reply is lost; each lands once."""
    cutter, store = cutter_store
    warm, _ = await store.create(_job())  # the scripts are loaded; what follows runs them
    await store.transition(warm.id, JobState.ACTIVE)
    await store.publish_progress([(warm, 1)])

    job = _job()
    cutter.arm(job.id)
    await store.create(job)
    cutter.arm(job.id)
    active, event_id = await store.transition(job.id, JobState.ACTIVE)
    active.progress = Progress(500, 1000, 0.0)
    cutter.arm(job.id)
    await store.publish_progress([(active, 500)])

    assert cutter.cut == 3
    assert await _state_events(store, job.id) == ["waiting", "active"]
    events = await store.job_events_after(job.id, "0-0")
    assert [e.event for e in events] == ["state", "state", "progress"]
    assert events[1].id == event_id
    assert (await store.state_counts())["active"] == 2
    assert await store.bytes_downloaded() == 501
    assert len(await store.owner_events_after("cut", "0-0")) == 6  # 3 per job, none twice
