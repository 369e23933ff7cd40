"""Zero configuration, end to end: ``jupyter server`` with the extension as installed,
no Redis and no API URL configured; a kernel of that server downloads with
``bgd.download(url).wait()``, and the job shows in ``{base_url}bgdownload/api/v1``.

Everything is real and separate: the Jupyter server process, the local stack it
starts (Redis, worker, API server), the ipykernel it runs, and the source server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado.websocket import websocket_connect

from bgdownload import local
from bgdownload.config import Settings
from bgdownload.local.redisproc import free_port
from tests.support.source_server import SourceServer

pytestmark = pytest.mark.slow

BASE = "/e2e/"
TOKEN = uuid.uuid4().hex


class JupyterServer:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url  # http://127.0.0.1:PORT/e2e/
        self.process = process
        self.log = log

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture
def jupyter(tmp_path: Path) -> Iterator[JupyterServer]:
    """``jupyter server`` as a subprocess; only where to keep state and files is set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGDOWNLOAD_")}
    env.update(
        BGDOWNLOAD_STATE_DIR=str(tmp_path / "state"),
        BGDOWNLOAD_DIR=str(tmp_path / "downloads"),
        BGDOWNLOAD_ALLOW_NETWORKS="127.0.0.0/8",
        # keep the user's own configuration (bgdownload settings file, ~/.jupyter) out
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
    )
    port = free_port()
    log = tmp_path / "jupyter.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1",
             f"--port={port}", "--port-retries=0", "--allow-root", f"--ServerApp.base_url={BASE}",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={tmp_path}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = JupyterServer(f"http://127.0.0.1:{port}{BASE}", process, log)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # shuts its kernels down too
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # the local stack outlives Jupyter by design: stop what it started
        local.down(Settings.from_env(env))


def wait_healthy(server: JupyterServer, client: httpx.Client) -> dict[str, Any]:
    """Poll ``{base_url}bgdownload/healthz`` until the local stack answers (bounded)."""
    deadline = time.monotonic() + 120
    last = "no answer"
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"jupyter exited:\n{server.logs()}"
        try:
            response = client.get(f"{server.url}bgdownload/healthz")
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
            last = response.text
        time.sleep(0.5)
    raise AssertionError(f"bgdownload never became healthy: {last}\n{server.logs()}")


async def execute(server: JupyterServer, client: httpx.AsyncClient, code: str) -> str:
    """Run ``code`` in a new kernel of ``server``; its stdout (fails on an error)."""
    kernel = (await client.post(f"{server.url}api/kernels", json={"name": "python3"})).json()
    ws_url = server.url.replace("http", "ws", 1) + f"api/kernels/{kernel['id']}/channels"
    ws = await websocket_connect(f"{ws_url}?token={TOKEN}")
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    out: list[str] = []
    replied = idle = False
    try:
        async with asyncio.timeout(240):
            while not (replied and idle):
                raw = await ws.read_message()
                assert raw is not None, f"kernel websocket closed\n{server.logs()}"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    out.append("\n".join(content["traceback"]))
                elif kind == "execute_reply":
                    replied = True
                    assert content["status"] == "ok", "".join(out)
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
    finally:
        ws.close()
        await client.delete(f"{server.url}api/kernels/{kernel['id']}")
    return "".join(out)


async def test_a_kernel_downloads_with_no_configuration_and_jupyter_lists_it(
    jupyter: JupyterServer, source: SourceServer, tmp_path: Path
) -> None:
    headers = {"Authorization": f"token {TOKEN}"}
    with httpx.Client(headers=headers, timeout=10, trust_env=False) as sync_client:
        health = await asyncio.to_thread(wait_healthy, jupyter, sync_client)
    assert health["redis"] == "ok" and health["workers"] >= 1
    stack_api = health["api_url"]

    url = source.url("/bytes/250000?seed=e2e")
    code = (
        "import os\n"
        "import bgdownload as bgd\n"
        "print('URL', os.environ.get('BGDOWNLOAD_URL'))\n"
        f"job = bgd.download({url!r})\n"
        "final = job.wait()\n"
        "print('JOB', final.id, final.state.value, final.sha256)\n"
    )
    async with httpx.AsyncClient(headers=headers, timeout=30, trust_env=False) as client:
        output = await execute(jupyter, client, code)
        lines = {line.split(" ", 1)[0]: line.split(" ") for line in output.splitlines()
                 if line.startswith(("URL ", "JOB "))}
        assert lines["URL"][1] == stack_api, output  # the kernel inherited where the API is
        _, job_id, state, sha256 = lines["JOB"]
        assert state == "completed", output
        assert sha256 == source.expected_sha256(250000, "e2e")

        listed = await client.get(f"{jupyter.url}bgdownload/api/v1/downloads")
        assert listed.status_code == 200
        jobs = {job["id"]: job for job in listed.json()["items"]}
        assert job_id in jobs and jobs[job_id]["state"] == "completed"

    # single-user: the same owner everywhere, so the stack's own API lists it too (asked
    # with the stack's own token, which the kernel's client found by itself: docs/api.md §17)
    stack_token = (tmp_path / "state" / "token").read_text().strip()
    async with httpx.AsyncClient(timeout=10, trust_env=False,
                                 headers={"Authorization": f"Bearer {stack_token}"}) as plain:
        from_stack = (await plain.get(f"{stack_api}/api/v1/downloads")).json()["items"]
    assert job_id in {job["id"] for job in from_stack}
