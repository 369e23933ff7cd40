"""The local stack (bgdownload.local) with real processes: Redis, a worker, the API server.

Each test gets its own state dir and download root; the environment the stack's
children inherit is set with ``monkeypatch`` because ``ensure_up`` passes the
caller's environment on. Every test ends with no process of its stack alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgdownload import local
from bgdownload.config import Settings
from bgdownload.errors import BgdownloadError, ConfigError

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")

REPO = Path(__file__).resolve().parents[2]


def stack_environ(tmp_path: Path) -> dict[str, str]:
    """A clean environment for one stack: its own dirs, loopback sources allowed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGDOWNLOAD_")}
    env.update(
        BGDOWNLOAD_STATE_DIR=str(tmp_path / "state"),
        BGDOWNLOAD_DIR=str(tmp_path / "downloads"),
        BGDOWNLOAD_ALLOW_NETWORKS="127.0.0.0/8",
        BGDOWNLOAD_SETTINGS_FILE=str(tmp_path / "no-settings.env"),
    )
    return env


def leftover_processes(state_dir: Path) -> list[int]:
    """Live processes of the stack in ``state_dir``: by working dir or environment.

    The stack runs its processes in the state dir (Redis moves to its data dir
    inside it); Redis rewrites its argv and environment block, so cwd is the
    one mark every one of them keeps.
    """
    marker = str(state_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        in_dir = cwd == marker or cwd.startswith(marker + "/")
        by_env = b"BGDOWNLOAD_STATE_DIR=" + marker.encode() + b"\0" in environ
        if (in_dir or by_env) and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL ``pid`` and wait until the kernel has taken it down (signals are async)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while local.pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
        time.sleep(0.02)


def kill_leftovers(state_dir: Path) -> None:
    for pid in leftover_processes(state_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This process's environment set up for a private stack; stops it afterwards."""
    env = stack_environ(tmp_path)
    for key in [k for k in os.environ if k.startswith("BGDOWNLOAD_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    state_dir = Path(env["BGDOWNLOAD_STATE_DIR"])
    try:
        yield env
    finally:
        try:
            local.down(Settings.from_env(env), grace=5)
        finally:
            kill_leftovers(state_dir)  # never leak processes into the next test


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


# --------------------------------------------------------- no worker/server needed


def test_runtime_info_is_none_and_status_empty_on_a_fresh_state_dir(stack_env):
    settings = settings_of(stack_env)
    assert local.runtime_info(settings) is None
    report = local.status(settings)
    assert report["running"] is False
    assert report["components"] == {}


def test_a_stale_runtime_file_is_removed(stack_env):
    settings = settings_of(stack_env)
    settings.state_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    local.runtime_path(settings).write_text(json.dumps({
        "api_url": "http://127.0.0.1:9", "redis_url": "redis://127.0.0.1:9/0",
        "pids": {"redis": dead.pid, "worker": dead.pid, "server": dead.pid},
        "boot_id": "another-boot",
    }))
    assert local.runtime_info(settings) is None
    assert not local.runtime_path(settings).exists()


def test_a_pid_recycled_by_another_program_is_not_taken_for_ours(stack_env):
    settings = settings_of(stack_env)
    settings.state_dir.mkdir(parents=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        local.runtime_path(settings).write_text(json.dumps({
            "api_url": "http://127.0.0.1:9", "pids": {"server": stranger.pid},
            "starts": {"server": 1},  # not the stranger's start time
        }))
        assert local.status(settings)["components"]["server"]["state"] == "dead"
        assert local.down(settings, grace=1) == []
        assert stranger.poll() is None, "down signalled a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_remote_bgdownload_url_is_refused(stack_env, monkeypatch):
    monkeypatch.setenv("BGDOWNLOAD_URL", "http://downloads.example.org:8765")
    with pytest.raises(ConfigError, match="remote"):
        local.ensure_up(Settings.from_env())


def test_a_failed_start_leaves_nothing_running(stack_env, monkeypatch):
    # the port BGDOWNLOAD_URL names is taken by someone else: up must fail cleanly
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        monkeypatch.setenv("BGDOWNLOAD_URL", f"http://127.0.0.1:{port}")
        settings = Settings.from_env()
        with pytest.raises(BgdownloadError, match="taken"):
            local.ensure_up(settings, timeout=20)
    assert not local.runtime_path(settings).exists()
    assert leftover_processes(settings.state_dir) == []


# ------------------------------------------------- the whole stack (worker + server)


def test_up_is_idempotent_and_down_leaves_nothing(stack_env):
    settings = settings_of(stack_env)
    first = local.ensure_up(settings)
    assert sorted(first["started"]) == ["redis", "server", "worker"]
    second = local.ensure_up(settings)
    assert second["started"] == []
    assert second["pids"] == first["pids"]
    assert second["api_url"] == first["api_url"]
    assert local.runtime_info(settings) is not None
    for name, pid in first["pids"].items():
        assert local.pid_path(settings, name).read_text().strip() == str(pid)
        assert Path(first["logs"][name]).exists()
    report = local.status(settings)
    assert report["running"] is True
    assert {n: c["state"] for n, c in report["components"].items()} == {
        "redis": "running", "worker": "running", "server": "running"}

    assert sorted(local.down(settings)) == ["redis", "server", "worker"]
    assert not local.runtime_path(settings).exists()
    assert local.runtime_info(settings) is None
    assert all(not local.pid_alive(pid) for pid in first["pids"].values())
    assert leftover_processes(settings.state_dir) == []
    assert local.down(settings) == []  # a second down is harmless


def test_two_concurrent_ups_start_one_stack(stack_env):
    cmd = [sys.executable, "-c",
           "import json; from bgdownload import local; from bgdownload.config import Settings;"
           "print(json.dumps(local.ensure_up(Settings.from_env())))"]
    procs = [subprocess.Popen(cmd, env=stack_env, cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [json.loads(p.communicate(timeout=100)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert results[0]["pids"] == results[1]["pids"]
    assert sorted(results[0]["started"] + results[1]["started"]) == ["redis", "server", "worker"]


def test_a_killed_worker_shows_dead_and_up_restarts_only_it(stack_env):
    settings = settings_of(stack_env)
    first = local.ensure_up(settings)
    worker = first["pids"]["worker"]
    kill_and_wait(worker)  # taskiq's child process lives on, orphaned
    report = local.status(settings)
    assert report["components"]["worker"]["state"] == "dead"
    assert report["components"]["server"]["state"] == "running"
    assert report["running"] is False
    assert local.runtime_info(settings) is None

    again = local.ensure_up(settings)
    assert again["started"] == ["worker"]
    assert again["pids"]["worker"] != worker
    assert again["pids"]["redis"] == first["pids"]["redis"]
    assert again["pids"]["server"] == first["pids"]["server"]
    local.down(settings)
    assert leftover_processes(settings.state_dir) == []


def test_a_loopback_bgdownload_url_chooses_the_port(stack_env, monkeypatch):
    from bgdownload.local.redisproc import free_port

    port = free_port()
    monkeypatch.setenv("BGDOWNLOAD_URL", f"http://127.0.0.1:{port}")
    info = local.ensure_up(Settings.from_env())
    assert info["api_url"] == f"http://127.0.0.1:{port}"


def test_queued_state_survives_down_and_up(stack_env):
    # the local Redis keeps an append-only file in the state dir
    import redis

    settings = settings_of(stack_env)
    info = local.ensure_up(settings)
    client = redis.Redis.from_url(info["redis_url"])
    client.set("bgd:test:survives", "yes")
    client.close()
    local.down(settings)
    info = local.ensure_up(settings)
    client = redis.Redis.from_url(info["redis_url"])
    try:
        assert client.get("bgd:test:survives") == b"yes"
    finally:
        client.close()


def test_an_external_redis_is_used_and_left_alone(stack_env, monkeypatch, redis_server):
    import redis

    monkeypatch.setenv("BGDOWNLOAD_REDIS_URL", redis_server)
    settings = Settings.from_env()
    info = local.ensure_up(settings)
    assert sorted(info["started"]) == ["server", "worker"]
    assert info["redis_url"] == redis_server
    assert "redis" not in info["pids"]
    assert local.status(settings)["components"]["redis"]["state"] == "external"
    assert sorted(local.down(settings)) == ["server", "worker"]
    client = redis.Redis.from_url(redis_server)
    try:
        assert client.ping()
    finally:
        client.close()
    assert leftover_processes(settings.state_dir) == []


# ------------------------------------------------------------- the stack's own token


def test_up_makes_a_private_token_that_the_server_requires(stack_env):
    import httpx

    settings = settings_of(stack_env)
    info = local.ensure_up(settings)
    path = local.token_path(settings)
    mode = path.stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)
    assert path.stat().st_uid == os.getuid()
    token = path.read_text().strip()
    assert len(token) >= 43 and local.read_token(settings) == token
    assert token not in local.runtime_path(settings).read_text()  # that file is world-readable

    api = info["api_url"]
    assert httpx.get(f"{api}/api/v1/downloads").status_code == 401
    mine = httpx.get(f"{api}/api/v1/downloads", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200
    # only the server holds it: the worker (which fetches arbitrary URLs) never sees it
    worker_env = Path(f"/proc/{info['pids']['worker']}/environ").read_bytes()
    assert token.encode() not in worker_env

    # the same token across restarts, so pages and clients that hold it keep working
    local.down(settings)
    again = local.ensure_up(settings)
    assert local.read_token(settings) == token
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{again['api_url']}/api/v1/downloads", headers=headers).status_code == 200


def test_the_cli_and_the_client_use_the_token_by_themselves(stack_env, source):
    settings = settings_of(stack_env)
    assert "BGDOWNLOAD_TOKEN" not in stack_env
    up = subprocess.run([sys.executable, "-m", "bgdownload", "up"], env=stack_env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    api = up.stdout.strip()
    token = local.read_token(settings)
    assert f"{api}/#token={token}" in up.stderr  # the page's link; stdout stays the URL

    got = subprocess.run(
        [sys.executable, "-m", "bgdownload", "get", source.url("/bytes/5000?seed=tok")],
        env=stack_env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    assert Path(got.stdout.strip()).read_bytes() == source.content(5000, "tok")

    # bgd.download with no URL and no token; and with BGDOWNLOAD_URL pointing at the
    # stack under another loopback name, as Jupyter tells its kernels
    script = ("import bgdownload as bgd, sys\n"
              "job = bgd.download(sys.argv[1])\n"
              "print(job.wait(progress=False).state.value)\n")
    port = api.rsplit(":", 1)[1]
    for extra in ({}, {"BGDOWNLOAD_URL": f"http://localhost:{port}"}):
        run = subprocess.run(
            [sys.executable, "-c", script, source.url("/bytes/3000?seed=py")],
            env={**stack_env, **extra}, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "completed"


def test_an_untrusted_token_file_is_replaced_and_the_server_restarted(stack_env):
    settings = settings_of(stack_env)
    first = local.ensure_up(settings)
    path = local.token_path(settings)
    old = path.read_text().strip()
    path.chmod(0o644)  # others could read it: it is no secret any more
    assert local.read_token(settings) is None

    again = local.ensure_up(settings)
    assert again["started"] == ["server"]
    assert again["pids"]["worker"] == first["pids"]["worker"]
    new = local.read_token(settings)
    assert new is not None and new != old
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_server_started_without_the_token_is_restarted(stack_env):
    # as a stack started by a version without tokens left it
    settings = settings_of(stack_env)
    local.ensure_up(settings)
    data = json.loads(local.runtime_path(settings).read_text())
    data.pop("token_id")
    local.runtime_path(settings).write_text(json.dumps(data))
    assert local.ensure_up(settings)["started"] == ["server"]
