"""Real worker processes and a real Service for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bgdownload.config import Settings
from bgdownload.service import Service

#: settings every integration test runs with: loopback sources allowed, quick ticks,
#: quick takeover of a dead worker's message
TEST_ENV = {
    "BGDOWNLOAD_ALLOW_NETWORKS": "127.0.0.0/8",
    "BGDOWNLOAD_PROGRESS_INTERVAL": "0.2",
    "BGDOWNLOAD_REDELIVERY_TIMEOUT": "4",
    "BGDOWNLOAD_RATE_LIMIT": "10000/minute",
}


class WorkerProcess:
    """``taskiq worker bgdownload.worker:broker`` as a child process."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "taskiq", "worker", "bgdownload.worker:broker",
             "--workers", "1", "--wait-tasks-timeout", "5", "--log-level", "INFO"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    @property
    def pids(self) -> list[int]:
        """The taskiq parent and its worker child."""
        assert self.process is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True, text=True, check=False,
        ).stdout
        return [self.process.pid, *(int(p) for p in out.split())]

    def kill(self) -> None:
        """SIGKILL the whole process group: no chance to clean up or acknowledge."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def stack_env(redis_url: str, download_dir: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGDOWNLOAD_")}
    env.update(TEST_ENV)
    env.update(
        BGDOWNLOAD_REDIS_URL=redis_url,
        BGDOWNLOAD_DIR=str(download_dir),
        BGDOWNLOAD_STATE_DIR=str(tmp_path / "state"),
        BGDOWNLOAD_SETTINGS_FILE=str(tmp_path / "no-settings.env"),
    )
    return env


@pytest.fixture
def stack_settings(stack_env: dict[str, str]) -> Settings:
    return Settings.from_env(stack_env)


@pytest.fixture
def start_worker(stack_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    """Start worker processes on demand: ``start_worker(**env_overrides)``."""
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        env = {**stack_env, **overrides}
        worker = WorkerProcess(env, tmp_path / f"worker{len(started)}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(start_worker) -> WorkerProcess:  # type: ignore[no-untyped-def]
    return start_worker()


@pytest.fixture
async def service(stack_settings: Settings) -> AsyncIterator[Service]:
    svc = await Service.connect(stack_settings)
    try:
        yield svc
    finally:
        await svc.close()


async def wait_for_state(service: Service, owner: str, job_id: str, states: set[str],
                         timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll until the job reaches one of ``states``; fail the test after ``timeout``."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        job = await service.get(owner, job_id)
        if job.state.value in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job.state.value}; wanted {states}")
        await asyncio.sleep(0.05)


class ServerProcess:
    """``bgdownload serve`` as a child process."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        self.env = env
        self.log_path = log_path
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        import httpx

        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bgdownload", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code in (200, 503):
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_server(stack_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    """Start API servers on demand: ``start_server(port=None, **env_overrides)``."""
    from bgdownload.local.redisproc import free_port

    started: list[ServerProcess] = []

    def start(port: int | None = None, **overrides: str) -> ServerProcess:
        server = ServerProcess(
            {**stack_env, **overrides}, tmp_path / f"server{len(started)}.log", port or free_port()
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def api(start_server, worker: WorkerProcess) -> str:  # type: ignore[no-untyped-def]
    """Base URL of a running stack: API server process + worker process + Redis."""
    return str(start_server().url)
