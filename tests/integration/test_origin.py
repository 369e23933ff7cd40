"""Host and Origin checks (docs/api.md §17) against a real ``bgdownload serve`` process.

A DNS-rebinding page reaches the server under a foreign ``Host``; a page of
another origin can send writes it cannot read the answer of, and open
WebSockets. Programs send neither ``Origin`` nor ``Sec-Fetch-Site`` and must
keep working.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import httpx
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from bgdownload.config import Settings
from bgdownload.errors import ConfigError
from tests.support.source_server import SourceServer


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


def port_of(server: Any) -> int:
    return int(server.port)


def jobs_of(base: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/v1/downloads", headers=headers or {})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def create(base: str, source: SourceServer, headers: dict[str, str] | None = None) -> str:
    response = httpx.post(f"{base}/api/v1/downloads", headers=headers or {},
                          json={"url": source.url("/bytes/1000")})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


# --------------------------------------------------------------------------- Host


@pytest.mark.parametrize("path", ["/api/v1/downloads", "/healthz", "/", "/static/app.js"])
def test_a_rebinding_host_is_refused_on_every_route(start_server, path: str) -> None:
    server = start_server()
    for host in (f"attacker.example:{server.port}", "attacker.example"):
        response = httpx.get(server.url + path, headers={"Host": host})
        assert response.status_code == 400, (host, response.text)
        assert error_code(response) == "invalid_request"
        assert "BGDOWNLOAD_ALLOWED_HOSTS" in response.json()["error"]["message"]


def test_loopback_names_at_the_servers_own_port_are_answered(start_server) -> None:
    server = start_server()
    port = port_of(server)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", f"[::1]:{port}"):
        response = httpx.get(f"{server.url}/api/v1/downloads", headers={"Host": host})
        assert response.status_code == 200, (host, response.text)
    # the same names at another port are another server, which this one is not
    other = httpx.get(f"{server.url}/api/v1/downloads", headers={"Host": f"localhost:{port + 1}"})
    assert other.status_code == 400
    assert error_code(other) == "invalid_request"


@pytest.mark.parametrize("host", ["", "local host", "user@localhost", "localhost:notaport"])
def test_a_malformed_host_is_refused(start_server, host: str) -> None:
    server = start_server()
    response = httpx.get(f"{server.url}/api/v1/downloads", headers={"Host": host})
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_request"


def test_allowed_hosts_add_names_with_or_without_a_port(start_server) -> None:
    server = start_server(BGDOWNLOAD_ALLOWED_HOSTS="downloads.example.org, proxy.example:8443")
    answers = {
        host: httpx.get(f"{server.url}/api/v1/downloads", headers={"Host": host}).status_code
        for host in ("downloads.example.org", "downloads.example.org:9", "proxy.example:8443",
                     "proxy.example:9999", "attacker.example")
    }
    assert answers == {"downloads.example.org": 200, "downloads.example.org:9": 200,
                       "proxy.example:8443": 200, "proxy.example:9999": 400,
                       "attacker.example": 400}


def test_a_malformed_allowed_hosts_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="BGDOWNLOAD_ALLOWED_HOSTS"):
        Settings.from_env({"BGDOWNLOAD_ALLOWED_HOSTS": "http://downloads.example.org/",
                           "BGDOWNLOAD_SETTINGS_FILE": os.devnull})
    parsed = Settings.from_env({"BGDOWNLOAD_ALLOWED_HOSTS": "A.example [::1]:80 *",
                                "BGDOWNLOAD_SETTINGS_FILE": os.devnull})
    assert parsed.allowed_hosts == ("a.example", "[::1]:80", "*")


def test_a_star_answers_every_host(start_server) -> None:
    server = start_server(BGDOWNLOAD_ALLOWED_HOSTS="*")
    response = httpx.get(f"{server.url}/api/v1/downloads", headers={"Host": "anything.example"})
    assert response.status_code == 200


# ------------------------------------------------------------------- Origin on writes


def foreign_headers(port: int) -> list[dict[str, str]]:
    """What browsers send with a request made by a page of another origin."""
    return [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # sandboxed frames, data: and file: pages
        {"Origin": f"http://localhost:{port}"},  # another name of this machine: another origin
        {"Origin": f"http://127.0.0.1:{port + 1}", "Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
    ]


def test_cross_origin_creates_are_refused_and_create_nothing(
    start_server, source: SourceServer
) -> None:
    server = start_server()
    for headers in foreign_headers(port_of(server)):
        as_json = httpx.post(f"{server.url}/api/v1/downloads", headers=headers,
                             json={"url": source.url("/bytes/10"), "filename": "evil.sh"})
        as_form = httpx.post(f"{server.url}/api/v1/downloads", headers=headers,
                             data={"url": source.url("/bytes/10"), "filename": "evil.sh"})
        seed = httpx.post(f"{server.url}/api/videos/download-url", headers=headers,
                          json={"url": source.url("/bytes/10")})
        for response in (as_json, as_form, seed):
            assert response.status_code == 403, (headers, response.text)
            assert response.json()["error"]["code"] == "forbidden"
            assert "refused" in response.json()["error"]["message"]
    assert jobs_of(server.url) == []


def test_cross_origin_control_and_delete_are_refused(start_server, source: SourceServer) -> None:
    server = start_server()
    job_id = create(server.url, source)
    evil = {"Origin": "http://evil.example"}
    for method, path in (("POST", f"/downloads/{job_id}/cancel"),
                         ("POST", f"/downloads/{job_id}/pause"),
                         ("DELETE", f"/downloads/{job_id}?delete_file=true")):
        response = httpx.request(method, f"{server.url}/api/v1{path}", headers=evil)
        assert response.status_code == 403, (path, response.text)
        assert error_code(response) == "forbidden"
    [job] = jobs_of(server.url)
    assert job["id"] == job_id and job["state"] == "waiting"


def test_same_origin_pages_and_programs_may_write(start_server, source: SourceServer) -> None:
    server = start_server()
    own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    created = {create(server.url, source), create(server.url, source, own),
               create(server.url, source, {"Sec-Fetch-Site": "none"})}  # typed by the user
    assert {job["id"] for job in jobs_of(server.url)} == created
    # reads are not refused: the same-origin policy already keeps their answers from a page
    assert len(jobs_of(server.url, {"Origin": "http://evil.example"})) == 3


def test_tokens_do_not_switch_the_checks_off(start_server, source: SourceServer) -> None:
    server = start_server(BGDOWNLOAD_TOKENS="sesame:alice")
    auth = {"Authorization": "Bearer sesame"}
    refused = httpx.post(f"{server.url}/api/v1/downloads",
                         headers={**auth, "Origin": "http://evil.example"},
                         json={"url": source.url("/bytes/10")})
    assert refused.status_code == 403
    rebound = httpx.get(f"{server.url}/api/v1/downloads",
                        headers={**auth, "Host": "attacker.example"})
    assert rebound.status_code == 400
    assert jobs_of(server.url, auth) == []


# ------------------------------------------------------------------ Origin on WebSockets


def handshake(url: str, origin: str | None) -> httpx.Response:
    """A WebSocket opening handshake by hand, to read the refusal's status and body."""
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    if origin is not None:
        headers["Origin"] = origin
    return httpx.get(url, headers=headers)


async def first_frame(url: str, origin: str | None) -> dict[str, Any]:
    headers = {"Origin": origin} if origin is not None else {}
    connection = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=30))
    try:
        message = await connection.read_message()
        assert isinstance(message, str)
        return dict(json.loads(message))
    finally:
        connection.close()


async def test_websockets_from_another_origin_are_refused(
    start_server, source: SourceServer
) -> None:
    server = start_server()
    job_id = create(server.url, source)
    for path in (f"/api/v1/downloads/{job_id}/ws", f"/ws/download/{job_id}"):
        for origin in ("http://evil.example", "null", f"http://localhost:{server.port}"):
            response = handshake(server.url + path, origin)
            assert response.status_code == 403, (path, origin, response.text)
            assert response.json()["error"]["code"] == "forbidden"
            ws_url = server.url.replace("http://", "ws://") + path
            with pytest.raises(HTTPClientError) as refused:
                await first_frame(ws_url, origin)
            assert refused.value.code == 403


async def test_websockets_from_the_same_origin_or_a_program_are_accepted(
    start_server, source: SourceServer
) -> None:
    server = start_server()
    job_id = create(server.url, source)
    ws_url = server.url.replace("http://", "ws://") + f"/api/v1/downloads/{job_id}/ws"
    for origin in (server.url, None):
        frame = await first_frame(ws_url, origin)
        assert frame["event"] == "snapshot" and frame["data"]["id"] == job_id
