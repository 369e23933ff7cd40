"""The ``bgdownload`` command as a user runs it: real processes, a real source server.

Commands run as ``python -m bgdownload`` in a private state dir and download
root; the local stack they start is stopped and checked gone afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgdownload import local
from bgdownload.config import Settings
from tests.integration.test_local_stack import (
    kill_and_wait,
    kill_leftovers,
    leftover_processes,
    stack_environ,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")

REPO = Path(__file__).resolve().parents[2]


class Cli:
    """Runs ``bgdownload`` with one environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.state_dir = Path(env["BGDOWNLOAD_STATE_DIR"])
        self.download_dir = Path(env["BGDOWNLOAD_DIR"])

    def __call__(
        self, *args: str, timeout: float = 100, extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bgdownload", *args], env={**self.env, **(extra_env or {})},
            cwd=REPO,
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def status(self) -> dict:
        result = self("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(stack_environ(tmp_path))
    try:
        yield runner
    finally:
        try:
            local.down(Settings.from_env(runner.env), grace=5)
        finally:
            kill_leftovers(runner.state_dir)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# ------------------------------------------------------------ no stack needed


@pytest.mark.parametrize("args", [
    ("get",),                                        # missing URL
    ("get", "http://127.0.0.1/x", "--sha256", "xyz"),  # not a digest
    ("ls", "--state", "sleeping"),                   # not a state
    ("serve", "--port", "0"),                        # out of range
    ("frobnicate",),                                 # no such command
])
def test_usage_errors_exit_2_with_one_line(cli, args):
    result = cli(*args)
    assert result.returncode == 2
    assert one_error_line(result).startswith("bgdownload: ")
    assert not cli.state_dir.exists(), "a usage error must not start anything"


def test_a_bad_setting_is_one_line_and_exit_1(cli):
    result = cli("status", extra_env={"BGDOWNLOAD_CONCURRENCY": "lots"})
    assert result.returncode == 1
    assert "BGDOWNLOAD_CONCURRENCY" in one_error_line(result)


def test_status_of_nothing(cli):
    result = cli("status")
    assert result.returncode == 0
    assert "not running" in result.stdout
    assert cli.status()["components"] == {}


def test_help_and_python_dash_m(cli):
    result = cli("--help")
    assert result.returncode == 0
    for command in ("up", "down", "status", "serve", "worker", "get", "ls", "attach",
                    "cancel", "pause", "resume"):
        assert f"  {command} " in result.stdout


# ------------------------------------------------ the whole stack (worker + server)


def test_up_get_status_kill_down(cli, source):
    result = cli("up")
    assert result.returncode == 0, result.stderr
    api_url = result.stdout.strip()
    assert api_url.startswith("http://127.0.0.1:")
    first = cli.status()
    pids = {n: c["pid"] for n, c in first["components"].items()}
    assert first["running"] is True

    again = cli("up")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == api_url
    assert {n: c["pid"] for n, c in cli.status()["components"].items()} == pids

    text = cli("status")
    assert text.returncode == 0
    assert api_url in text.stdout
    for name in ("redis", "worker", "server"):
        assert name in text.stdout

    got = cli("get", source.url("/bytes/300000?seed=cli"), "-o", "cli.bin",
              "--sha256", source.expected_sha256(300000, "cli"))
    assert got.returncode == 0, got.stderr
    target = cli.download_dir / "cli.bin"
    assert got.stdout.strip().endswith("cli.bin")
    assert target.read_bytes() == source.content(300000, "cli")

    missing = cli("get", source.url("/status/404"))
    assert missing.returncode == 1
    assert "404" in one_error_line(missing)

    kill_and_wait(pids["worker"])
    report = cli.status()
    assert report["components"]["worker"]["state"] == "dead"
    assert report["components"]["server"]["state"] == "running"
    assert report["running"] is False
    assert "dead" in cli("status").stdout

    stopped = cli("down")
    assert stopped.returncode == 0, stopped.stderr
    assert cli.status()["components"] == {}
    assert all(not local.pid_alive(pid) for pid in pids.values())
    assert leftover_processes(cli.state_dir) == []


def test_get_starts_the_stack_by_itself(cli, source):
    # a fresh machine: nothing started by hand, no BGDOWNLOAD_URL
    got = cli("get", source.url("/bytes/1000?seed=auto"))
    assert got.returncode == 0, got.stderr
    assert Path(got.stdout.strip()).read_bytes() == source.content(1000, "auto")
    assert cli.status()["running"] is True


def test_detach_attach_ls(cli, source):
    assert cli("up").returncode == 0
    detached = cli("get", source.url("/bytes/2000?seed=d"), "--detach")
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    assert len(job_id) == 36

    attached = cli("attach", job_id)
    assert attached.returncode == 0, attached.stderr
    listed = cli("ls", "--state", "completed")
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout
    assert job_id not in cli("ls", "--state", "failed").stdout


def test_pause_resume_cancel(cli, source):
    assert cli("up").returncode == 0
    # throttled so the job is still moving while it is controlled
    detached = cli("get", source.url("/bytes/2000000?seed=slow&rate=100000"), "--detach")
    job_id = detached.stdout.strip()
    paused = cli("pause", job_id)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.split() == [job_id, "paused"]
    resumed = cli("resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split()[0] == job_id
    cancelled = cli("cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.split() == [job_id, "cancelled"]
    again = cli("attach", job_id)
    assert again.returncode == 1
    assert "cancelled" in one_error_line(again)


def test_unknown_job_is_one_line_and_exit_1(cli):
    assert cli("up").returncode == 0
    result = cli("cancel", "0b6f3c1e-8f5e-4a55-9a8e-1d1b5c0e2f11")
    assert result.returncode == 1
    assert one_error_line(result)


def test_ctrl_c_leaves_the_download_running(cli, source):
    assert cli("up").returncode == 0
    getter = subprocess.Popen(
        [sys.executable, "-m", "bgdownload", "get",
         source.url("/bytes/3000000?seed=int&rate=200000")],
        env=cli.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "active" not in cli("ls", "--state", "active").stdout:
            assert time.monotonic() < deadline and getter.poll() is None, "the job never started"
            time.sleep(0.2)
        getter.send_signal(signal.SIGINT)
        _, stderr = getter.communicate(timeout=30)
    finally:
        if getter.poll() is None:
            getter.kill()
            getter.wait()
    assert getter.returncode == 130, stderr
    assert len(stderr.splitlines()) == 1 and "attach" in stderr, stderr
    job_id = cli("ls", "--state", "active").stdout.split()[0]
    assert cli("cancel", job_id).returncode == 0
