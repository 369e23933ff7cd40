"""Hostile input against a running server (docs/api.md §17): refused with a §6 body, never 500.

Real parts: ``bgdownload serve`` and ``taskiq worker`` processes, Redis, the test source
servers. Each test is one finding of the security review (issue 12, findings 4 to 12).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.source_server import SourceServer

pytestmark = pytest.mark.slow

TOKENS = "tok-alice:alice,tok-alicex:alice:x"
ALICE = {"Authorization": "Bearer tok-alice"}
ALICE_X = {"Authorization": "Bearer tok-alicex"}


def create(api: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{api}/api/v1/downloads", json=body, headers=headers, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"]


def wait_for(api: str, job_id: str, states: set[str], headers: dict[str, str] | None = None,
             timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{api}/api/v1/downloads/{job_id}", headers=headers, timeout=10).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['state']}"
        time.sleep(0.1)


@pytest.fixture
def second_source() -> Iterator[SourceServer]:
    """Another origin: same host, another port."""
    server = SourceServer().start()
    try:
        yield server
    finally:
        server.stop()


# -- finding 6: headers --


@pytest.mark.parametrize("name, value", [
    ("X-Nul", "a\x00b"), ("X-Vt", "a\x0bb"), ("X-Accent", "caf\u00e9"), ("X-Ls", "a\u2028b"),
    ("Host", "attacker.example"), ("Transfer-Encoding", "chunked"), ("Content-Length", "1"),
    ("Connection", "close"), ("Upgrade", "h2c"),
])
def test_bad_headers_are_a_400_naming_them(api: str, source: SourceServer, name: str,
                                           value: str) -> None:
    response = create(api, {"url": source.url("/bytes/10"), "headers": {name: value}})
    assert_error(response, 400, "invalid_request", name)


# -- finding 4: every caller header stays with the first origin --


def test_no_caller_header_follows_a_redirect_to_another_origin(
    api: str, source: SourceServer, second_source: SourceServer
) -> None:
    target = second_source.url("/bytes/1000?seed=r")
    secrets = {"X-Api-Key": "k-123", "Private-Token": "p-456", "Authorization": "Bearer a"}
    response = create(api, {"url": source.redirect_url(target), "headers": secrets})
    assert response.status_code == 202, response.text
    job = wait_for(api, response.json()["id"], {"completed", "failed"})
    assert job["state"] == "completed", job
    first = source.requests_to("/redirect")
    assert first and first[0].headers["x-api-key"] == "k-123"
    arrived = second_source.requests_to("/bytes/1000")
    assert arrived
    for request in arrived:
        assert not {"x-api-key", "private-token", "authorization"} & set(request.headers)


# -- finding 5: idempotency keys of owners with a colon --


def test_idempotency_keys_do_not_collide_across_owners(start_server, source) -> None:  # type: ignore[no-untyped-def]
    api = start_server(BGDOWNLOAD_TOKENS=TOKENS).url
    first = create(api, {"url": source.url("/bytes/5?seed=a")},
                   {**ALICE, "Idempotency-Key": "x:k1"})
    second = create(api, {"url": source.url("/bytes/5?seed=b")},
                    {**ALICE_X, "Idempotency-Key": "k1"})
    assert first.status_code == 202 and second.status_code == 202, second.text
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["url"].endswith("seed=b")


# -- finding 7: JSON depth; finding 12: sha256 --


def test_deep_json_is_a_400_in_bodies_and_form_fields(start_server, source) -> None:  # type: ignore[no-untyped-def]
    api = start_server().url
    deep = "[" * 1000 + "]" * 1000
    body = json.dumps({"url": source.url("/bytes/1"), "metadata": {"a": "X"}}).replace(
        '"X"', deep)
    response = httpx.post(f"{api}/api/v1/downloads", content=body,
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert_error(response, 400, "invalid_request", "64")
    form = {"url": source.url("/bytes/1"), "metadata": '{"a": ' + deep + "}"}
    assert_error(httpx.post(f"{api}/api/v1/downloads", data=form, timeout=30),
                 400, "invalid_request", "64")
    seed = httpx.post(f"{api}/v1/download/initiate", content='{"file_ids": ' + deep + "}",
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert seed.status_code == 400
    sha = create(api, {"url": source.url("/bytes/1"), "sha256": "a" * 64 + "\n"})
    assert_error(sha, 400, "invalid_request", "sha256")


# -- finding 9: file ids --


def test_file_ids_that_climb_the_template_are_a_400(start_server, source) -> None:  # type: ignore[no-untyped-def]
    template = source.url("/files/{file_id}/data")
    api = start_server(BGDOWNLOAD_FILE_URL_TEMPLATE=template).url
    for bad in ([".."], ["../x"], ["%2e%2e"], ["a/b"]):
        response = httpx.post(f"{api}/v1/download/initiate", json={"file_ids": bad}, timeout=30)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    assert not source.requests


# -- finding 8: Last-Event-ID --


def first_events(api: str, path: str, headers: dict[str, str], count: int,
                 timeout: float = 30) -> list[dict[str, Any]]:
    """The first ``count`` named events of an SSE stream (it must stay open that long)."""
    found: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{api}{path}", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        event: dict[str, Any] = {}
        for line in response.iter_lines():
            if line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif not line and event:
                found.append(event)
                event = {}
                if len(found) == count:
                    return found
    raise AssertionError(f"the stream ended after {found}")


def test_malformed_last_event_id_is_a_400_and_a_future_one_means_now(
    api: str, source: SourceServer
) -> None:
    job = create(api, {"url": source.url("/bytes/400000?rate=100000")}).json()
    events = f"/api/v1/downloads/{job['id']}/events"
    for bad in ("9999999999999999999999-0", "abc", "1-2-3"):
        response = httpx.get(f"{api}{events}", headers={"Last-Event-ID": bad}, timeout=30)
        assert_error(response, 400, "invalid_request", "Last-Event-ID")
        response = httpx.get(f"{api}/api/v1/events?last_event_id={bad}", timeout=30)
        assert_error(response, 400, "invalid_request", "Last-Event-ID")
    wait_for(api, job["id"], {"active"})
    # an id from the future: nothing to replay, but the live events still come
    got = first_events(api, events, {"Last-Event-ID": "99999999999999-0"}, 2)
    assert {e["event"] for e in got} <= {"progress", "state"}
    assert any(e["event"] == "progress" for e in got)


# -- finding 11: a per-owner cap on open streams --


def test_streams_past_the_owner_cap_are_a_429_with_retry_after(start_server) -> None:  # type: ignore[no-untyped-def]
    api = start_server(BGDOWNLOAD_MAX_STREAMS_PER_OWNER="2", BGDOWNLOAD_TOKENS=TOKENS).url
    with httpx.Client(base_url=api, timeout=30) as client:
        with client.stream("GET", "/api/v1/events", headers=ALICE) as one, \
                client.stream("GET", "/api/v1/events", headers=ALICE) as two:
            assert one.status_code == two.status_code == 200
            refused = client.get("/api/v1/events", headers=ALICE)
            assert_error(refused, 429, "rate_limited", "2 event streams")
            assert int(refused.headers["Retry-After"]) >= 1
            with client.stream("GET", "/api/v1/events?access_token=tok-alicex") as other:
                assert other.status_code == 200  # the cap is per owner
        # both closed: their slots come back once the server notices
        deadline = time.monotonic() + 30
        while True:
            with client.stream("GET", "/api/v1/events", headers=ALICE) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "slots were not given back"
            time.sleep(0.2)


# -- finding 10: /metrics and /docs --


def test_metrics_need_the_metrics_token_when_tokens_are_configured(start_server) -> None:  # type: ignore[no-untyped-def]
    closed = start_server(BGDOWNLOAD_TOKENS=TOKENS).url
    assert_error(httpx.get(f"{closed}/metrics", headers=ALICE), 401, "unauthorized",
                 "BGDOWNLOAD_METRICS_TOKEN")
    api = start_server(BGDOWNLOAD_TOKENS=TOKENS, BGDOWNLOAD_METRICS_TOKEN="scrape-me").url
    for headers in ({}, ALICE, {"Authorization": "Bearer wrong"}):
        assert_error(httpx.get(f"{api}/metrics", headers=headers), 401, "unauthorized")
    ok = httpx.get(f"{api}/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status_code == 200 and "bgdownload_jobs" in ok.text


def test_docs_load_nothing_from_another_origin(api: str) -> None:
    html = httpx.get(f"{api}/docs").text
    assert "cdn" not in html.lower() and "https://" not in html
    assert "/docs/static/swagger-ui-bundle.js" in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = httpx.get(f"{api}/docs/static/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000
    assert httpx.get(f"{api}/docs/static/swagger-editor-bundle.js").status_code == 404
    assert httpx.get(f"{api}/redocs").status_code in (301, 302, 303, 307, 308)


# -- finding 12: Content-Disposition and 431 --


def test_file_names_go_out_as_rfc_6266(api: str, source: SourceServer) -> None:
    response = create(api, {"url": source.url("/bytes/10"), "filename": "r\u00e9sum\u00e9.txt"})
    job = wait_for(api, response.json()["id"], {"completed", "failed"})
    assert job["state"] == "completed", job
    file = httpx.get(f"{api}/api/v1/downloads/{job['id']}/file")
    disposition = file.headers["Content-Disposition"]
    assert disposition.isascii()
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.txt" in disposition
    assert 'filename="r_sum_.txt"' in disposition


def test_headers_too_large_is_a_431_with_the_error_body(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /api/v1/downloads HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                     + b"a" * 100_000 + b"\r\n\r\n")
        raw = b""
        while b"}" not in raw:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), head
    assert b"application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "headers_too_large"


# -- nothing a caller sends is a 500 --

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)
_FIELDS = ["url", "files", "filename", "sha256", "headers", "priority", "max_speed",
           "connections", "metadata"]
_URLS = st.sampled_from(["http://127.0.0.1:9/x", "https://127.0.0.1:9/", "ftp://h/",
                         "http://10.0.0.1/", "http://[::1]/", "http://127.0.0.1:99999/",
                         "http://%00/", "javascript:x", ""]) | _TEXT
_BODIES = st.fixed_dictionaries({}, optional={
    "url": _URLS, "filename": _JSON, "sha256": _JSON, "headers": _JSON | st.dictionaries(
        _TEXT, _TEXT, max_size=3), "priority": _JSON, "max_speed": _JSON,
    "connections": _JSON, "metadata": _JSON, "files": st.lists(_URLS | _JSON, max_size=3),
}) | st.dictionaries(st.sampled_from(_FIELDS) | _TEXT, _JSON, max_size=4) | _JSON
#: raw bodies: JSON nested up to far past the recursion limit, or not JSON at all
_RAW = st.integers(1, 3000).map(lambda n: '{"metadata": {"a": ' + "[" * n + "]" * n + "}}") | \
    st.binary(max_size=60)
#: what httpx will put in a header (it refuses leading or trailing blanks itself)
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                       max_size=40).map(str.strip)


@pytest.fixture(scope="module")
def hostile_api(tmp_path_factory: pytest.TempPathFactory,
                redis_server: str) -> Iterator[str]:
    """One server for every generated case (hypothesis calls the test many times)."""
    from bgdownload.local.redisproc import free_port
    from tests.support.stack import TEST_ENV, ServerProcess

    tmp = tmp_path_factory.mktemp("hostile")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGDOWNLOAD_")}
    env.update(TEST_ENV, BGDOWNLOAD_REDIS_URL=redis_server, BGDOWNLOAD_DIR=str(tmp / "dl"),
               BGDOWNLOAD_STATE_DIR=str(tmp / "state"),
               BGDOWNLOAD_SETTINGS_FILE=str(tmp / "none.env"),
               BGDOWNLOAD_FILE_URL_TEMPLATE="http://127.0.0.1:9/f/{file_id}")
    server = ServerProcess(env, tmp / "server.log", free_port()).start()
    try:
        yield server.url
    finally:
        server.stop()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_BODIES, key=_HEADER_TEXT, last=_HEADER_TEXT,
       query=st.dictionaries(st.sampled_from(["state", "limit", "cursor", "delete_file",
                                              "last_event_id"]) | _HEADER_TEXT,
                             _TEXT, max_size=3),
       file_ids=_JSON, raw=_RAW)
def test_nothing_a_caller_sends_is_a_500(hostile_api: str, body: Any, key: str, last: str,
                                         query: dict[str, str], file_ids: Any,
                                         raw: str | bytes) -> None:
    with httpx.Client(base_url=hostile_api, timeout=30) as client:
        headers = {"Idempotency-Key": key} if key else {}
        answers = [
            client.post("/api/v1/downloads", json=body, headers=headers),
            client.post("/api/v1/downloads", data={k: json.dumps(v) for k, v in body.items()}
                        if isinstance(body, dict) else {"url": json.dumps(body)}),
            client.get("/api/v1/downloads", params=query),
            client.delete("/api/v1/downloads/x", params=query),
            client.post("/v1/download/initiate", json={"file_ids": file_ids}),
            client.post("/api/videos/download-url", json=body),
            client.post("/api/v1/downloads", content=raw,
                        headers={"Content-Type": "application/json"}),
            client.post("/v1/download/initiate", content=raw,
                        headers={"Content-Type": "application/json"}),
        ]
        with client.stream("GET", "/api/v1/events", params=query,
                           headers={"Last-Event-ID": last} if last else {}) as stream:
            if stream.status_code >= 400:
                stream.read()
            answers.append(stream)
    for response in answers:
        assert response.status_code < 500, (response.request.url, response.text)
        if response.status_code >= 400:
            assert "error" in response.json()
