"""SSE and WebSocket routes (docs/api.md §3, §7) with a real worker process and source server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from werkzeug.datastructures import Headers

from bgdownload.config import Settings
from bgdownload.server import create_app
from bgdownload.service import Service
from tests.support.source_server import SourceServer

SIZE = 1_500_000
pytestmark = pytest.mark.slow


@pytest.fixture
async def app(service: Service, stack_settings: Settings) -> AsyncIterator[Quart]:
    settings = stack_settings.replace(file_url_template=None)
    app = create_app(settings, service)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Blocks of an SSE body as dicts of field → value (``comment`` for ``:`` lines)."""
    blocks = []
    for raw in text.split("\n\n"):
        if not raw.strip():
            continue
        block: dict[str, Any] = {}
        for line in raw.split("\n"):
            name, _, value = line.partition(": ") if not line.startswith(":") else (
                "comment", "", line[1:].strip())
            block[name] = value
        blocks.append(block)
    return blocks


async def read_stream(client: Client, path: str, headers: dict[str, str] | None = None,
                      limit: float = 60.0) -> tuple[int, Headers, str]:
    """The whole body of a stream that ends by itself (bounded by ``limit`` seconds)."""
    async with asyncio.timeout(limit):
        async with client.request(path, headers=headers or {}) as connection:
            await connection.send_complete()
            chunks = []
            while True:
                chunk = await connection.receive()
                chunks.append(chunk)
                if chunk == b"":
                    break
        assert connection.headers is not None and connection.status_code is not None
        return connection.status_code, connection.headers, b"".join(chunks).decode()


async def create(client: Client, url: str) -> str:
    response = await client.post("/api/v1/downloads", json={"url": url})
    assert response.status_code == 202
    return str((await response.get_json())["id"])


async def test_job_stream_runs_from_snapshot_to_terminal_state(
    client: Client, worker: object, source: SourceServer
) -> None:
    job_id = await create(client, source.url(f"/bytes/{SIZE}?rate=1000000"))
    status, headers, body = await read_stream(client, f"/api/v1/downloads/{job_id}/events")
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    assert body.startswith("retry: 2000\n\n")

    events = [b for b in parse_sse(body) if "event" in b]
    assert events[0]["event"] == "snapshot"
    assert all(e["id"] for e in events)
    assert any(e["event"] == "progress" for e in events)
    last = events[-1]
    assert last["event"] == "state"
    final = json.loads(last["data"])
    assert final["state"] == "completed"
    assert final["sha256"] == source.expected_sha256(SIZE)

    # Reconnecting after an event replays exactly what came after it.
    middle = events[1]
    _, _, replay_body = await read_stream(
        client, f"/api/v1/downloads/{job_id}/events", headers={"Last-Event-ID": middle["id"]}
    )
    replayed = [b["id"] for b in parse_sse(replay_body) if "event" in b]
    assert replayed == [e["id"] for e in events[2:]]
    _, _, query_body = await read_stream(
        client, f"/api/v1/downloads/{job_id}/events?last_event_id={middle['id']}"
    )
    assert [b["id"] for b in parse_sse(query_body) if "event" in b] == replayed


async def test_owner_stream_disconnect_releases_the_subscription(
    app: Quart, client: Client, service: Service
) -> None:
    job_id = await create(client, "http://127.0.0.1:9/never.bin")
    metrics = app.extensions["bgdownload.metrics"].streams
    async with asyncio.timeout(30):
        async with client.request("/api/v1/events") as connection:
            await connection.send_complete()
            assert (await connection.receive()).startswith(b"retry:")
            # it subscribes as the body starts, a moment after the first chunk
            while service.hub.listener_count != 1:
                await asyncio.sleep(0.01)
            assert metrics.open["sse"] == 1
            # an event for this owner arrives live
            await client.post(f"/api/v1/downloads/{job_id}/pause")
            chunk = await connection.receive()
            while b"event: state" not in chunk:
                chunk += await connection.receive()
            assert b'"paused"' in chunk
            await connection.disconnect()
    assert service.hub.listener_count == 0
    assert metrics.open["sse"] == 0


async def test_websocket_sends_frames_until_the_terminal_state(
    client: Client, worker: object, source: SourceServer
) -> None:
    job_id = await create(client, source.url(f"/bytes/{SIZE}?rate=1500000"))
    frames = []
    async with asyncio.timeout(60):
        async with client.websocket(f"/api/v1/downloads/{job_id}/ws") as ws:
            while True:
                frame = json.loads(await ws.receive())
                frames.append(frame)
                if frame["event"] == "state" and frame["data"]["state"] == "completed":
                    break
    assert frames[0]["event"] == "snapshot"
    assert all(set(f) == {"event", "id", "data"} for f in frames)
    assert frames[-1]["data"]["id"] == job_id


async def test_websocket_for_an_unknown_job_is_refused_with_404(client: Client) -> None:
    from quart.testing.connections import WebsocketResponseError

    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket(
            "/api/v1/downloads/0b6f3c1e-8f5e-4a55-9a8e-1d1b5c0e2f11/ws"
        ) as ws:
            await ws.receive()
    assert refused.value.response.status_code == 404


async def test_seed_progress_stream_and_status(
    client: Client, worker: object, source: SourceServer
) -> None:
    response = await client.post(
        "/api/videos/download-url", form={"url": source.url(f"/bytes/{SIZE}?rate=1000000")}
    )
    assert response.status_code == 202
    created = await response.get_json()
    assert created["success"] is True and created["message"] == "Download started"
    job_id = created["jobId"]
    assert created["queueJobId"]

    status = await (await client.get(f"/api/videos/download-status/{job_id}")).get_json()
    assert status["success"] is True and status["jobId"] == job_id
    assert set(status["progress"]) == {"loaded", "total", "percent", "speed"}
    assert isinstance(status["progress"]["percent"], int)

    code, _, body = await read_stream(client, f"/api/videos/download-progress/{job_id}")
    assert code == 200
    messages = [b for b in parse_sse(body) if "data" in b]
    assert all("event" not in m for m in messages)  # unnamed: onmessage fires
    data = [json.loads(m["data"]) for m in messages]
    assert data[-1] == {"state": "completed", "percent": 100}
    progress = [d for d in data if "state" not in d]
    assert progress and all(set(d) == {"loaded", "total", "percent", "speed"} for d in progress)
    assert all(isinstance(d["percent"], int) and d["total"] == SIZE for d in progress)

    # an EventSource that reconnects after the end is told to stop (204)
    again = await client.get(
        f"/api/videos/download-progress/{job_id}", headers={"Last-Event-ID": messages[-1]["id"]}
    )
    assert again.status_code == 204

    done = await (await client.get(f"/api/videos/download-status/{job_id}")).get_json()
    assert done["state"] == "completed"
    assert done["progress"] == {"loaded": SIZE, "total": SIZE, "percent": 100, "speed": 0}


async def test_seed_batch_routes(
    service: Service, stack_settings: Settings, worker: object, source: SourceServer
) -> None:
    template = source.url("/bytes/{file_id}")
    settings = stack_settings.replace(file_url_template=template)
    service.settings = settings
    app = create_app(settings, service)
    async with app.test_app():
        client = app.test_client()
        response = await client.post("/v1/download/initiate", json={"file_ids": [70000, 70007]})
        assert response.status_code == 202
        body = await response.get_json()
        assert body["status"] == "queued" and body["totalFiles"] == 2
        job_id = body["jobId"]

        frames = []
        async with asyncio.timeout(60):
            async with client.websocket(f"/ws/download/{job_id}") as ws:
                while True:
                    frame = json.loads(await ws.receive())
                    frames.append(frame)
                    if frame["status"] in ("completed", "failed"):
                        break
        assert frames[-1]["status"] == "completed"
        assert frames[-1]["completedFiles"] == 2

        status = await (await client.get(f"/v1/download/status/{job_id}")).get_json()
        assert status["jobId"] == job_id and status["status"] == "completed"
        assert [f["file_id"] for f in status["files"]] == [70000, 70007]
        assert all(f["status"] == "completed" for f in status["files"])
        assert status["files"][1]["progress"]["total"] == 70007


async def test_seed_batch_without_template_is_400_with_success_false(client: Client) -> None:
    response = await client.post("/v1/download/initiate", json={"file_ids": [1]})
    assert response.status_code == 400
    body = await response.get_json()
    assert body["success"] is False and body["error"]["code"] == "invalid_request"


async def test_healthz_is_200_with_a_worker(client: Client, worker: object) -> None:
    async with asyncio.timeout(30):
        # the worker's first heartbeat comes after its start-up
        while (response := await client.get("/healthz")).status_code != 200:
            await asyncio.sleep(0.2)
    body = await response.get_json()
    assert body == {"redis": "ok", "workers": 1}
