"""REST routes (docs/api.md §2, §4, §6) against a real Service on a real Redis; no worker,
so created jobs simply stay ``waiting``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bgdownload.config import Settings
from bgdownload.local.redisproc import RedisProcess, start_redis
from bgdownload.models import JobState
from bgdownload.server import create_app
from bgdownload.service import Service

SOURCE = "http://127.0.0.1:9/file.bin"  # never fetched: no worker runs here


@pytest.fixture
async def app(service: Service, stack_settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(stack_settings, service)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


async def create(client: Client, **fields: object) -> dict:
    response = await client.post("/api/v1/downloads", json={"url": SOURCE, **fields})
    assert response.status_code == 202, await response.get_data(as_text=True)
    return await response.get_json()


async def error_of(response) -> dict:  # type: ignore[no-untyped-def]
    body = await response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}
    return body["error"]


async def test_create_answers_202_with_location_and_the_job(client: Client) -> None:
    response = await client.post(
        "/api/v1/downloads",
        json={"url": SOURCE, "filename": "wanted.bin", "priority": 5,
              "metadata": {"tag": "x"}, "headers": {"Cookie": "secret-cookie"}},
    )
    assert response.status_code == 202
    job = await response.get_json()
    assert response.headers["Location"] == f"/api/v1/downloads/{job['id']}"
    assert job["state"] == "waiting"
    assert job["url"] == SOURCE
    assert job["priority"] == 5
    assert job["metadata"] == {"tag": "x"}
    assert "headers" not in job
    for path in (f"/api/v1/downloads/{job['id']}", "/api/v1/downloads"):
        text = await (await client.get(path)).get_data(as_text=True)
        assert "secret-cookie" not in text


async def test_idempotency_key_replays_the_first_job_with_200(
    client: Client,
) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = await client.post("/api/v1/downloads", json={"url": SOURCE}, headers=headers)
    second = await client.post("/api/v1/downloads", json={"url": SOURCE}, headers=headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert (await first.get_json())["id"] == (await second.get_json())["id"]
    listed = await (await client.get("/api/v1/downloads")).get_json()
    assert len(listed["items"]) == 1


@pytest.mark.parametrize("kind", ["form", "multipart"])
async def test_create_accepts_forms_with_json_valued_fields(
    client: Client, kind: str
) -> None:
    fields = {"url": SOURCE, "priority": "7", "metadata": '{"from": "form"}',
              "headers": '{"Authorization": "Bearer hidden"}'}
    if kind == "form":
        response = await client.post("/api/v1/downloads", form=fields)
    else:
        # quart's test client encodes `form` as urlencoded; build multipart by hand
        boundary = "bgdtestboundary"
        body = "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        ) + f"--{boundary}--\r\n"
        response = await client.post(
            "/api/v1/downloads", data=body.encode(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 202, await response.get_data(as_text=True)
    job = await response.get_json()
    assert job["priority"] == 7
    assert job["metadata"] == {"from": "form"}
    assert "hidden" not in await response.get_data(as_text=True)


async def test_list_filters_by_state_and_pages_with_a_cursor(
    client: Client,
) -> None:
    ids = [(await create(client))["id"] for _ in range(5)]
    paused = await client.post(f"/api/v1/downloads/{ids[0]}/pause")
    assert paused.status_code == 200

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(f"/api/v1/downloads?{query}")).get_json()
        assert set(page) == {"items", "next"}
        seen += [job["id"] for job in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once

    waiting = await (await client.get("/api/v1/downloads?state=waiting,active")).get_json()
    assert {job["id"] for job in waiting["items"]} == set(ids[1:])
    only_paused = await (await client.get("/api/v1/downloads?state=paused")).get_json()
    assert [job["id"] for job in only_paused["items"]] == [ids[0]]


@pytest.mark.parametrize(
    "query", ["limit=501", "limit=0", "limit=abc", "state=sleeping", "cursor=garbage"]
)
async def test_list_rejects_bad_queries_with_400(client: Client, query: str) -> None:
    response = await client.get(f"/api/v1/downloads?{query}")
    assert response.status_code == 400
    assert (await error_of(response))["code"] == "invalid_request"


async def test_control_calls_answer_the_contract_statuses(client: Client) -> None:
    job_id = (await create(client))["id"]
    base = f"/api/v1/downloads/{job_id}"

    paused = await client.post(f"{base}/pause")
    assert paused.status_code == 200 and (await paused.get_json())["state"] == "paused"
    assert (await client.post(f"{base}/pause")).status_code == 409

    resumed = await client.post(f"{base}/resume")
    assert resumed.status_code == 202 and (await resumed.get_json())["state"] == "waiting"

    cancelled = await client.post(f"{base}/cancel")
    assert cancelled.status_code == 200 and (await cancelled.get_json())["state"] == "cancelled"
    conflict = await client.post(f"{base}/cancel")
    assert conflict.status_code == 409
    assert (await error_of(conflict))["code"] == "invalid_state"

    retried = await client.post(f"{base}/retry")
    assert retried.status_code == 202 and (await retried.get_json())["state"] == "waiting"

    deleted = await client.delete(base)
    assert deleted.status_code == 204
    assert await deleted.get_data() == b""
    assert (await client.get(base)).status_code == 404


@pytest.mark.parametrize("path", [
    "/api/v1/downloads/0b6f3c1e-8f5e-4a55-9a8e-1d1b5c0e2f11",
    "/api/v1/downloads/not-a-uuid",
    "/api/v1/downloads/0b6f3c1e-8f5e-4a55-9a8e-1d1b5c0e2f11/events",
    "/api/v1/downloads/0b6f3c1e-8f5e-4a55-9a8e-1d1b5c0e2f11/file",
    "/no/such/route",
])
async def test_unknown_things_are_404_with_the_error_body(
    client: Client, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert (await error_of(response))["code"] == "not_found"


async def test_wrong_method_malformed_json_and_bad_fields(client: Client) -> None:
    wrong = await client.put("/api/v1/downloads")
    assert wrong.status_code == 405
    assert "POST" in wrong.headers["Allow"]
    await error_of(wrong)

    malformed = await client.post(
        "/api/v1/downloads", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert (await error_of(malformed))["code"] == "invalid_request"

    for body in ({"url": SOURCE, "colour": "red"}, {"url": 42}, {"url": SOURCE, "priority": "x"},
                 {}, {"url": SOURCE, "metadata": [1]}):
        response = await client.post("/api/v1/downloads", json=body)
        assert response.status_code == 400, body
        assert (await error_of(response))["code"] == "invalid_request"

    bad_url = await client.post("/api/v1/downloads", json={"url": "ftp://example.org/x"})
    assert bad_url.status_code == 422
    assert (await error_of(bad_url))["code"] == "invalid_url"


async def test_blocked_destination_is_422(stack_settings: Settings) -> None:
    strict = stack_settings.replace(allow_networks=())
    svc = await Service.connect(strict)
    try:
        app = create_app(strict, svc)
        async with app.test_app():
            response = await app.test_client().post(
                "/api/v1/downloads", json={"url": "http://2130706433/x"}
            )
        assert response.status_code == 422
        assert (await error_of(response))["code"] == "blocked_destination"
    finally:
        await svc.close()


async def test_body_over_max_body_is_413(service: Service, stack_settings: Settings) -> None:
    app = create_app(stack_settings.replace(max_body=1000), service)
    async with app.test_app():
        client = app.test_client()
        big = b'{"url": "' + b"a" * 2000 + b'"}'
        response = await client.post(
            "/api/v1/downloads", data=big,
            headers={"Content-Type": "application/json", "Content-Length": str(len(big))},
        )
        assert response.status_code == 413
        assert (await error_of(response))["code"] == "payload_too_large"
        form = await client.post("/api/v1/downloads", form={"url": "a" * 2000})
        assert form.status_code == 413


async def test_rate_limit_is_429_with_retry_after(stack_settings: Settings) -> None:
    limited = stack_settings.replace(rate_limit=(2, 60.0))
    svc = await Service.connect(limited)
    try:
        app = create_app(limited, svc)
        async with app.test_app():
            client = app.test_client()
            statuses = [
                (await client.post("/api/v1/downloads", json={"url": SOURCE})) for _ in range(3)
            ]
        assert [r.status_code for r in statuses] == [202, 202, 429]
        assert int(statuses[2].headers["Retry-After"]) >= 1
        assert (await error_of(statuses[2]))["code"] == "rate_limited"
    finally:
        await svc.close()


async def finished_job(client: Client, service: Service, root: Path,
                       payload: bytes) -> str:
    """A job made completed by hand (as a worker would) with its file on disk."""
    job_id = (await create(client))["id"]
    assert await service.store.name_file(job_id, None, "done.bin", "done.bin")  # reserved
    (root / "done.bin").write_bytes(payload)
    await service.store.transition(job_id, JobState.ACTIVE)
    await service.store.transition(
        job_id, JobState.COMPLETED, path="done.bin", filename="done.bin",
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    return job_id


async def test_file_download_supports_ranges(
    client: Client, service: Service, download_dir: Path
) -> None:
    payload = bytes(range(256)) * 40
    job_id = await finished_job(client, service, download_dir, payload)
    url = f"/api/v1/downloads/{job_id}/file"

    whole = await client.get(url)
    assert whole.status_code == 200
    assert await whole.get_data() == payload
    assert whole.headers["Accept-Ranges"] == "bytes"

    part = await client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert await part.get_data() == payload[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(payload)}"

    outside = await client.get(url, headers={"Range": f"bytes={len(payload) + 10}-"})
    assert outside.status_code == 416
    await error_of(outside)


async def test_file_of_an_unfinished_job_is_409(client: Client) -> None:
    job_id = (await create(client))["id"]
    response = await client.get(f"/api/v1/downloads/{job_id}/file")
    assert response.status_code == 409


async def test_delete_file_removes_it(
    client: Client, service: Service, download_dir: Path
) -> None:
    job_id = await finished_job(client, service, download_dir, b"data")
    response = await client.delete(f"/api/v1/downloads/{job_id}?delete_file=true")
    assert response.status_code == 204
    assert not (download_dir / "done.bin").exists()


async def test_healthz_without_a_worker_is_503_and_metrics_count_jobs(
    client: Client,
) -> None:
    await create(client)
    health = await client.get("/healthz")
    assert health.status_code == 503
    body = await health.get_json()
    assert body["redis"] == "ok" and body["workers"] == 0
    assert body["error"]["code"] == "unavailable"

    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    text = await metrics.get_data(as_text=True)
    assert 'bgdownload_jobs{state="waiting"} 1.0' in text
    assert "bgdownload_queue_depth 1.0" in text
    assert "bgdownload_downloaded_bytes_total 0.0" in text
    assert 'bgdownload_stream_clients{kind="sse"} 0.0' in text


async def test_page_and_openapi(client: Client) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    html = await page.get_data(as_text=True)
    assert "Active Downloads" in html
    assert "/static/app.js" in html and "/static/app.css" in html
    for asset in ("/static/app.js", "/static/app.css"):
        assert (await client.get(asset)).status_code == 200

    spec = await (await client.get("/openapi.json")).get_json()
    assert "/api/v1/downloads" in spec["paths"]
    create_op = spec["paths"]["/api/v1/downloads"]["post"]
    assert "202" in create_op["responses"]
    assert "CreateDownload" in str(create_op["requestBody"])


# -- authentication and isolation (docs/api.md §4) --


@pytest.fixture
async def token_client(service: Service, stack_settings: Settings) -> AsyncIterator[
    Client
]:
    settings = stack_settings.replace(tokens={"tok-alice": "alice", "tok-bob": "bob"})
    app = create_app(settings, service)
    async with app.test_app():
        yield app.test_client()


ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic dG9rLWFsaWNlOg=="}])
async def test_missing_or_wrong_token_is_401_with_www_authenticate(
    token_client: Client, headers: dict[str, str]
) -> None:
    response = await token_client.get("/api/v1/downloads", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await error_of(response))["code"] == "unauthorized"


async def test_owners_see_only_their_jobs(token_client: Client) -> None:
    created = await token_client.post("/api/v1/downloads", json={"url": SOURCE}, headers=ALICE)
    job_id = (await created.get_json())["id"]
    base = f"/api/v1/downloads/{job_id}"
    assert (await token_client.get(base, headers=ALICE)).status_code == 200
    for method, path in (("GET", base), ("POST", f"{base}/cancel"), ("DELETE", base),
                         ("GET", f"{base}/file"), ("GET", f"{base}/events")):
        response = await token_client.open(path, method=method, headers=BOB)
        assert response.status_code == 404, (method, path)
    bob_list = await (await token_client.get("/api/v1/downloads", headers=BOB)).get_json()
    assert bob_list["items"] == []


async def test_access_token_query_only_on_event_streams(
    token_client: Client,
) -> None:
    listed = await token_client.get("/api/v1/downloads?access_token=tok-alice")
    assert listed.status_code == 401
    created = await token_client.post("/api/v1/downloads?access_token=tok-alice",
                                      json={"url": SOURCE})
    assert created.status_code == 401

    job = await (await token_client.post(
        "/api/v1/downloads", json={"url": SOURCE}, headers=ALICE)).get_json()
    async with token_client.request(
        f"/api/v1/downloads/{job['id']}/events?access_token=tok-alice"
    ) as connection:
        await connection.send_complete()
        first = await connection.receive()
        assert connection.status_code == 200
        assert first.startswith(b"retry: 2000")
        await connection.disconnect()


async def test_websocket_needs_a_token_and_accepts_access_token(
    token_client: Client,
) -> None:
    from quart.testing.connections import WebsocketResponseError

    job = await (await token_client.post(
        "/api/v1/downloads", json={"url": SOURCE}, headers=ALICE)).get_json()
    path = f"/api/v1/downloads/{job['id']}/ws"
    with pytest.raises(WebsocketResponseError) as refused:
        async with token_client.websocket(path) as ws:
            await ws.receive()
    assert refused.value.response.status_code == 401
    with pytest.raises(WebsocketResponseError) as hidden:
        async with token_client.websocket(path, headers=BOB) as ws:
            await ws.receive()
    assert hidden.value.response.status_code == 404
    async with token_client.websocket(f"{path}?access_token=tok-alice") as ws:
        frame = json.loads(await ws.receive())
    assert frame["event"] == "snapshot" and frame["data"]["id"] == job["id"]


async def test_interactive_docs_are_served(client: Client) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "/openapi.json" in await response.get_data(as_text=True)
    # ReDoc has no packaged bundle: rather than load it from a CDN, it leads to /docs
    response = await client.get("/redocs")
    assert (response.status_code, response.headers["Location"]) == (302, "/docs")


async def test_list_carries_the_event_stream_position(client: Client) -> None:
    before = await client.get("/api/v1/downloads")
    position = before.headers["X-Last-Event-ID"]
    assert re.fullmatch(r"\d+-\d+", position)
    job = await create(client)
    after = await client.get("/api/v1/downloads")
    assert after.headers["X-Last-Event-ID"] > position or len(after.headers["X-Last-Event-ID"]) > len(position)
    assert job["id"] in [j["id"] for j in (await after.get_json())["items"]]


# -- Redis out of reach (docs/api.md §6, §11) --


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of this test's own, so that the test can stop it."""
    server = start_redis(tmp_path / "private-redis")
    yield server
    server.stop()


async def test_redis_outage_is_503_unavailable_with_retry_after(
    stack_settings: Settings, private_redis: RedisProcess
) -> None:
    settings = stack_settings.replace(redis_url=private_redis.url)
    svc = await Service.connect(settings)
    try:
        app = create_app(settings, svc)
        async with app.test_app():
            client = app.test_client()
            job = await create(client)
            private_redis.stop()
            for method, path in (("GET", "/api/v1/downloads"),
                                 ("GET", f"/api/v1/downloads/{job['id']}"),
                                 ("POST", f"/api/v1/downloads/{job['id']}/pause")):
                response = await client.open(path, method=method)
                assert response.status_code == 503, (method, path)
                assert (await error_of(response))["code"] == "unavailable"
                assert int(response.headers["Retry-After"]) >= 1
    finally:
        with contextlib.suppress(Exception):
            await svc.close()
