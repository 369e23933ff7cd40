"""The Jupyter server extension: docs/api.md §2 to §4 under ``{base_url}bgdownload/`` on a real
in-process Jupyter server (pytest-jupyter), a real Redis, a real worker and a real source.

pytest-jupyter's fixtures are imported here rather than enabled as a plugin: the
plugin's collection hooks would take every coroutine test of the suite away from
pytest-asyncio. Its ``jp_asyncio_loop`` is replaced by pytest-asyncio's loop, so
the Jupyter server, the extension and these tests share one event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jupyter_server.auth.identity import IdentityProvider, User
from pytest_jupyter.jupyter_server import *  # noqa: F403  (the jp_* fixtures)
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from bgdownload.local.redisproc import RedisProcess, free_port, start_redis
from bgdownload.models import JobState
from bgdownload.service import Service
from tests.support.source_server import SourceServer

UNREACHABLE = "http://127.0.0.1:9/never.bin"  # never fetched unless a worker runs
MISSING = "0b6f3c1e-8f5e-4a55-9a8e-1d1b5c0e2f11"


@pytest.fixture
async def jp_asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    yield asyncio.get_running_loop()


@pytest.fixture
def extra_env() -> dict[str, str]:
    """Settings a test adds (parametrize it); they reach the extension when it loads."""
    return {}


@pytest.fixture
def bgd_env(
    stack_env: dict[str, str], extra_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The stack's BGDOWNLOAD_* settings in os.environ, before the extension reads them."""
    for name in list(os.environ):
        if name.startswith("BGDOWNLOAD_"):
            monkeypatch.delenv(name)
    env = {**stack_env, **extra_env}
    for name, value in env.items():
        if name.startswith("BGDOWNLOAD_"):
            monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def extra_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def jp_server_config(bgd_env: dict[str, str], extra_config: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ServerApp": {"jpserver_extensions": {"bgdownload_jupyter": True}},
        "BgdownloadJupyterApp": {"keepalive_interval": 0.3},
    }
    for section, values in extra_config.items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.fixture
def server_url(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> str:
    """``http://127.0.0.1:PORT{base_url}`` of the running Jupyter server."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
async def api(server_url: str, jp_auth_header: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``{base_url}bgdownload/api/v1/`` authenticated with Jupyter's token."""
    async with httpx.AsyncClient(
        base_url=f"{server_url}bgdownload/api/v1/", headers=jp_auth_header, timeout=30,
        trust_env=False,
    ) as client:
        yield client


async def create(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post("downloads", json={"url": UNREACHABLE, **fields})
    assert response.status_code == 202, response.text
    return response.json()


async def wait_state(api: httpx.AsyncClient, job_id: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = (await api.get(f"downloads/{job_id}")).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['state']}; wanted {states}"
        await asyncio.sleep(0.1)


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Events of an SSE body as {"id", "event", "data"} (comments dropped)."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            events.append({"id": fields["id"], "event": fields["event"],
                           "data": json.loads(fields["data"])})
    return events


# ----------------------------------------------------------------------------- REST


async def test_extension_is_loaded_with_jp_fetch(jp_fetch: Any, jp_serverapp: Any) -> None:
    assert "bgdownload_jupyter" in jp_serverapp.extension_manager.extensions
    response = await jp_fetch("bgdownload", "api", "v1", "downloads")
    assert response.code == 200
    assert json.loads(response.body) == {"items": [], "next": None}


async def test_create_download_and_fetch_the_file(
    api: httpx.AsyncClient, worker: Any, source: SourceServer, jp_base_url: str,
) -> None:
    url = source.url("/bytes/200000?seed=jup")
    response = await api.post("downloads", json={"url": url, "filename": "x.bin"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"{jp_base_url}bgdownload/api/v1/downloads/{job['id']}"
    done = await wait_state(api, job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert done["sha256"] == source.expected_sha256(200000, "jup")

    listed = (await api.get("downloads", params={"state": "completed"})).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    assert (await api.get("downloads", params={"state": "waiting"})).json()["items"] == []

    whole = await api.get(f"downloads/{job['id']}/file")
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == done["sha256"]
    assert "attachment" in whole.headers["Content-Disposition"]
    part = await api.get(f"downloads/{job['id']}/file", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == source.content(200000, "jup")[10:20]


async def test_health_reports_redis_and_workers(
    server_url: str, jp_auth_header: dict[str, str], worker: Any
) -> None:
    async with httpx.AsyncClient(headers=jp_auth_header, trust_env=False) as client:
        deadline = time.monotonic() + 60
        while True:
            response = await client.get(f"{server_url}bgdownload/healthz")
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert response.status_code == 200, response.text
    assert response.json()["redis"] == "ok" and response.json()["workers"] >= 1


async def test_health_without_a_worker_is_503(server_url: str, jp_auth_header: dict[str, str]) -> None:
    async with httpx.AsyncClient(headers=jp_auth_header, trust_env=False) as client:
        response = await client.get(f"{server_url}bgdownload/healthz")
    assert response.status_code == 503
    assert response.json()["redis"] == "ok"
    assert "worker" in response.json()["error"]["message"]


async def test_form_create_and_idempotency(api: httpx.AsyncClient) -> None:
    form = await api.post("downloads", data={"url": UNREACHABLE, "metadata": '{"k": 1}'})
    assert form.status_code == 202, form.text
    assert form.json()["metadata"] == {"k": 1}
    first = await api.post("downloads", json={"url": UNREACHABLE}, headers={"Idempotency-Key": "k1"})
    again = await api.post("downloads", json={"url": UNREACHABLE}, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]


async def test_control_calls_answer_the_contract_statuses(
    api: httpx.AsyncClient, service: Service
) -> None:
    job_id = (await create(api))["id"]  # no worker: it stays waiting
    base = f"downloads/{job_id}"
    paused = await api.post(f"{base}/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    conflict = await api.post(f"{base}/pause")
    assert conflict.status_code == 409 and error_of(conflict)["code"] == "invalid_state"
    resumed = await api.post(f"{base}/resume")
    assert resumed.status_code == 202 and resumed.json()["state"] == "waiting"
    cancelled = await api.post(f"{base}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    retried = await api.post(f"{base}/retry")
    assert retried.status_code == 202 and retried.json()["state"] == "waiting"
    # single-user mode: the job belongs to "local", like the CLI's and the kernels'
    assert (await service.get("local", job_id)).state is JobState.WAITING
    deleted = await api.delete(base, params={"delete_file": "true"})
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await api.get(base)).status_code == 404


@pytest.mark.parametrize("method,path", [
    ("GET", f"downloads/{MISSING}"),
    ("GET", "downloads/not-a-uuid"),
    ("POST", f"downloads/{MISSING}/cancel"),
    ("DELETE", f"downloads/{MISSING}"),
    ("GET", f"downloads/{MISSING}/file"),
    ("GET", f"downloads/{MISSING}/events"),
])
async def test_unknown_jobs_are_404_with_the_error_body(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


async def test_bad_requests_get_the_contract_errors(api: httpx.AsyncClient) -> None:
    cases = [
        (api.post("downloads", content=b"{nope", headers={"Content-Type": "application/json"}),
         400, "invalid_request"),
        (api.post("downloads", json={"url": UNREACHABLE, "bogus": 1}), 400, "invalid_request"),
        (api.post("downloads", json={}), 400, "invalid_request"),
        (api.post("downloads", json={"url": "ftp://example.org/x"}), 422, "invalid_url"),
        (api.post("downloads", json={"url": "http://10.1.2.3/x"}), 422, "blocked_destination"),
        (api.get("downloads", params={"limit": "0"}), 400, "invalid_request"),
        (api.get("downloads", params={"limit": "many"}), 400, "invalid_request"),
        (api.get("downloads", params={"state": "sleeping"}), 400, "invalid_request"),
    ]
    for request, status, code in cases:
        response = await request
        assert response.status_code == status, response.text
        assert error_of(response)["code"] == code
    job_id = (await create(api))["id"]
    unfinished = await api.get(f"downloads/{job_id}/file")
    assert unfinished.status_code == 409 and error_of(unfinished)["code"] == "invalid_state"


# ----------------------------------------------------------------------------- SSE


async def test_job_events_end_after_the_terminal_state_and_replay_after_an_id(
    api: httpx.AsyncClient, worker: Any, source: SourceServer
) -> None:
    job = (await api.post("downloads", json={"url": source.url("/bytes/300000?rate=600000")})).json()
    async with api.stream("GET", f"downloads/{job['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        body = (await response.aread()).decode()
    assert body.startswith("retry: 2000\n\n")
    events = parse_sse(body)
    assert events[0]["event"] == "snapshot"
    assert events[-1]["event"] == "state" and events[-1]["data"]["state"] == "completed"

    # reconnect after the first event: every later event, none twice, no snapshot
    replay = await api.get(f"downloads/{job['id']}/events",
                           headers={"Last-Event-ID": events[0]["id"]})
    replayed = parse_sse(replay.text)
    assert replayed and replayed[0]["event"] != "snapshot"
    assert [e["id"] for e in replayed] == sorted({e["id"] for e in replayed})
    assert replayed[-1]["data"]["state"] == "completed"
    query = await api.get(f"downloads/{job['id']}/events",
                          params={"last_event_id": replayed[-2]["id"]})
    assert [e["id"] for e in parse_sse(query.text)] == [replayed[-1]["id"]]


async def test_owner_events_stream_new_jobs_and_keep_alive(api: httpx.AsyncClient) -> None:
    async with api.stream("GET", "events") as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        # keepalive_interval is 0.3 s in this config: an idle stream says so
        async with asyncio.timeout(20):
            async for line in lines:
                if line == ": keep-alive":
                    break
        job = await create(api)
        async with asyncio.timeout(20):
            async for line in lines:
                if line.startswith("data: ") and json.loads(line[6:]).get("id") == job["id"]:
                    break


async def test_websocket_carries_the_events_as_frames(
    api: httpx.AsyncClient, server_url: str, jp_auth_header: dict[str, str]
) -> None:
    job_id = (await create(api))["id"]  # no worker: waiting until cancelled below
    url = f"{server_url.replace('http', 'ws', 1)}bgdownload/api/v1/downloads/{job_id}/ws"
    ws = await websocket_connect(HTTPRequest(url, headers=jp_auth_header))
    try:
        async with asyncio.timeout(30):
            snapshot = json.loads(await ws.read_message())
            assert snapshot["event"] == "snapshot" and snapshot["data"]["state"] == "waiting"
            assert (await api.post(f"downloads/{job_id}/cancel")).status_code == 200
            frame = json.loads(await ws.read_message())
            assert frame == {"event": "state", "id": frame["id"], "data": frame["data"]}
            assert frame["data"]["state"] == "cancelled"
            assert await ws.read_message() is None  # closed after the terminal event
    finally:
        ws.close()
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(url.replace(job_id, MISSING), headers=jp_auth_header))
    assert refused.value.code == 404


# ----------------------------------------------------------------------------- auth


async def test_requests_without_jupyter_auth_are_refused(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url, trust_env=False) as anonymous:
        for method, path in (("GET", "bgdownload/api/v1/downloads"),
                             ("POST", "bgdownload/api/v1/downloads"),
                             ("GET", "bgdownload/api/v1/events"),
                             ("GET", "bgdownload/healthz")):
            response = await anonymous.request(method, path)
            assert response.status_code == 403, (method, path, response.status_code)
        page = await anonymous.get("bgdownload/")
        assert page.status_code == 302 and "login" in page.headers["Location"]


async def test_cookie_sessions_need_the_xsrf_header_on_post(
    server_url: str, jp_serverapp: Any
) -> None:
    token = jp_serverapp.identity_provider.token
    async with httpx.AsyncClient(base_url=server_url, trust_env=False) as browser:
        page = await browser.get("bgdownload/", params={"token": token})  # logs in: cookies
        assert page.status_code == 200
        xsrf = browser.cookies.get("_xsrf")
        assert xsrf
        refused = await browser.post("bgdownload/api/v1/downloads", json={"url": UNREACHABLE})
        assert refused.status_code == 403
        assert "xsrf" in refused.text.lower()
        accepted = await browser.post("bgdownload/api/v1/downloads", json={"url": UNREACHABLE},
                                      headers={"X-XSRFToken": xsrf})
        assert accepted.status_code == 202, accepted.text
        # reading needs no XSRF header, the cookie session suffices
        assert (await browser.get("bgdownload/api/v1/downloads")).status_code == 200


class TwoUsers(IdentityProvider):
    """``Authorization: token alice-secret`` is alice, ``bob-secret`` bob."""

    async def get_user(self, handler: Any) -> User | None:  # type: ignore[override]
        header = handler.request.headers.get("Authorization", "")
        name = {"token alice-secret": "alice", "token bob-secret": "bob"}.get(header)
        if name is None:
            return None
        handler._token_authenticated = True  # a token, like Jupyter's: no XSRF check
        return User(username=name)


ALICE = {"Authorization": "token alice-secret"}
BOB = {"Authorization": "token bob-secret"}


@pytest.mark.parametrize("extra_config", [{"ServerApp": {"identity_provider_class": TwoUsers}}])
@pytest.mark.parametrize("extra_env", [{"BGDOWNLOAD_TOKENS": "t1:alice,t2:bob"}])
async def test_with_tokens_each_jupyter_user_owns_their_jobs(
    server_url: str, service: Service
) -> None:
    async with httpx.AsyncClient(base_url=f"{server_url}bgdownload/api/v1/",
                                 trust_env=False) as client:
        created = await client.post("downloads", json={"url": UNREACHABLE}, headers=ALICE)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert (await service.get("alice", job_id)).id == job_id
        assert (await client.get(f"downloads/{job_id}", headers=ALICE)).status_code == 200
        for method, path in (("GET", f"downloads/{job_id}"), ("POST", f"downloads/{job_id}/cancel"),
                             ("DELETE", f"downloads/{job_id}"), ("GET", f"downloads/{job_id}/events"),
                             ("GET", f"downloads/{job_id}/file")):
            response = await client.request(method, path, headers=BOB)
            assert response.status_code == 404, (method, path)
        assert (await client.get("downloads", headers=BOB)).json()["items"] == []
        mine = (await client.get("downloads", headers=ALICE)).json()["items"]
        assert [j["id"] for j in mine] == [job_id]


# ----------------------------------------------------------------------------- the page


async def test_the_page_is_served_under_the_base_url(
    server_url: str, jp_auth_header: dict[str, str], jp_base_url: str
) -> None:
    assert jp_base_url != "/"
    async with httpx.AsyncClient(base_url=server_url, headers=jp_auth_header,
                                 trust_env=False) as client:
        page = await client.get("bgdownload/")
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        html = page.text
        assert f'<meta name="bgdownload-api" content="{jp_base_url}bgdownload/api/v1">' in html
        assert '<meta name="bgdownload-xsrf" content="' in html
        assert f'src="{jp_base_url}bgdownload/static/app.js"' in html
        assert f'href="{jp_base_url}bgdownload/static/app.css"' in html
        assert '"/static/' not in html
        script = await client.get("bgdownload/static/app.js")
        assert script.status_code == 200 and 'meta("bgdownload-api")' in script.text
        assert (await client.get("bgdownload/static/app.css")).status_code == 200
        redirect = await client.get("bgdownload")
        assert redirect.status_code == 302
        assert redirect.headers["Location"].endswith(f"{jp_base_url}bgdownload/")


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("extra_env", [{"BGDOWNLOAD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}])
async def test_unreachable_redis_is_503_not_a_broken_jupyter(
    server_url: str, jp_auth_header: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=server_url, headers=jp_auth_header, timeout=60,
                                 trust_env=False) as client:
        # Jupyter itself is fine
        assert (await client.get("api/status")).status_code == 200
        health = await client.get("bgdownload/healthz")
        assert health.status_code == 503
        assert health.json()["redis"] == "error"
        listing = await client.get("bgdownload/api/v1/downloads")
        assert listing.status_code == 503
        assert error_of(listing)["code"] == "unavailable"


class TestRedisGoingAway:
    """Redis stops after the extension connected: 503 ``unavailable`` with Retry-After."""

    @pytest.fixture
    def private_redis(self, tmp_path: Path) -> Iterator[RedisProcess]:
        server = start_redis(tmp_path / "private-redis")
        yield server
        server.stop()

    @pytest.fixture
    def extra_env(self, private_redis: RedisProcess) -> dict[str, str]:
        return {"BGDOWNLOAD_REDIS_URL": private_redis.url}

    async def test_redis_outage_is_503_unavailable_with_retry_after(
        self, api: httpx.AsyncClient, private_redis: RedisProcess
    ) -> None:
        job = await create(api)
        private_redis.stop()
        for method, path in (("GET", "downloads"), ("GET", f"downloads/{job['id']}"),
                             ("POST", f"downloads/{job['id']}/pause")):
            response = await api.request(method, path)
            assert response.status_code == 503, (method, path, response.text)
            assert error_of(response)["code"] == "unavailable"
            assert int(response.headers["Retry-After"]) >= 1
