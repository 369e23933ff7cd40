"""Shared machinery of the benchmark suite: a real stack, timing, sampling, tables.

Everything runs on 127.0.0.1 on free ports: one Redis (``start_redis``), Debian's
nginx as the source (``benchmarks/nginx.py``), worker processes (``taskiq worker
bgdownload.worker:broker``) and API servers (``python -m bgdownload serve``),
exactly as users run them. Each benchmark module exposes ``run(ctx) -> list[Row]``;
``run_all.py`` calls them in one process against one nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.nginx import run_nginx  # noqa: E402
from bgdownload import keys  # noqa: E402
from bgdownload.local.redisproc import RedisProcess, free_port, start_redis  # noqa: E402

#: source files, shared with bench_single.py (same names, so a 1 GiB blob is made once)
DATA_DIR = Path(tempfile.gettempdir()) / "bgd-bench-data"
MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

#: every worker and server of a benchmark: loopback sources, no rate limit in the way
BASE_ENV = {
    "BGDOWNLOAD_ALLOW_NETWORKS": "127.0.0.0/8",
    "BGDOWNLOAD_RATE_LIMIT": "1000000/minute",
    "BGDOWNLOAD_PROGRESS_INTERVAL": "0.5",
}


# ----------------------------------------------------------------- results

@dataclass
class Row:
    """One line of the results table."""

    number: str
    name: str
    ours: str
    peer: str
    ratio: str
    target: str
    met: bool | None  # None: informational, no target
    note: str = ""


def verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| # | benchmark | bgdownload | peer / ceiling | ratio | target | result | note |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.number} | {r.name} | {r.ours} | {r.peer} | {r.ratio} | "
                     f"{r.target} | {verdict(r.met)} | {r.note} |")
    return "\n".join(lines)


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median (min-max)`` of ``values``."""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------- data

def ensure_file(name: str, size: int) -> Path:
    """A file of random bytes under DATA_DIR (kept between runs)."""
    DATA_DIR.mkdir(exist_ok=True)
    DATA_DIR.chmod(0o755)
    path = DATA_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    if not path.exists() or path.stat().st_size != size:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            left = size
            while left:
                block = os.urandom(min(left, 16 * MiB))
                f.write(block)
                left -= len(block)
        tmp.chmod(0o644)
        tmp.replace(path)
    return path


def ensure_blob(size: int) -> Path:
    return ensure_file(f"blob-{size}.bin", size)


def ensure_small_files(count: int, size: int) -> list[str]:
    """``count`` files of ``size`` bytes; returns their paths relative to DATA_DIR."""
    names = [f"small-{size}/f{i:05d}.bin" for i in range(count)]
    for name in names:
        ensure_file(name, size)
    return names


# ----------------------------------------------------------------- /proc sampling

def proc_rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class RssSampler:
    """Samples the RSS of some pids in a thread; ``peak`` is the largest sum seen."""

    def __init__(self, pids: Sequence[int], period: float = 0.1) -> None:
        self.pids = list(pids)
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(proc_rss(p) for p in self.pids))
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, sum(proc_rss(p) for p in self.pids))


# ----------------------------------------------------------------- processes

def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Child:
    """A worker or server process group this suite started."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def main_pid(self, timeout: float = 20) -> int:
        """The process doing the work: taskiq's worker child, else the process itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = children(self.pid)
            if kids:
                return kids[0]
            if self.process.poll() is not None:
                raise RuntimeError(f"process exited:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self.pid

    def stop(self) -> None:
        _stop_group(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    """One Redis and the workers/servers started against it."""

    tmp: Path
    redis: RedisProcess
    download_dir: Path
    started: list[Child] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BGDOWNLOAD_")}
        env.update(BASE_ENV)
        env.update(
            BGDOWNLOAD_REDIS_URL=self.redis.url,
            BGDOWNLOAD_DIR=str(self.download_dir),
            BGDOWNLOAD_STATE_DIR=str(self.tmp / "state"),
            BGDOWNLOAD_SETTINGS_FILE=str(self.tmp / "no-settings.env"),
        )
        env.update(overrides)
        return env

    def settings(self, **overrides: str):  # type: ignore[no-untyped-def]
        from bgdownload.config import Settings

        return Settings.from_env(self.env(**overrides))

    def _spawn(self, cmd: list[str], name: str, env: dict[str, str]) -> Child:
        log_path = self.tmp / f"{name}-{len(self.started)}.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=REPO)
        child = Child(proc, log_path)
        self.started.append(child)
        return child

    def start_worker(self, **overrides: str) -> Child:
        cmd = [sys.executable, "-m", "taskiq", "worker", "bgdownload.worker:broker",
               "--workers", "1", "--wait-tasks-timeout", "5", "--log-level", "WARNING"]
        if "BGDOWNLOAD_CONCURRENCY" in overrides:
            # taskiq runs at most 100 tasks per process unless told (what `bgdownload
            # worker` passes too); the broker's slots alone do not lift that
            cmd += ["--max-async-tasks", overrides["BGDOWNLOAD_CONCURRENCY"]]
        worker = self._spawn(cmd, "worker", self.env(**overrides))
        worker.main_pid()
        wait_until(lambda: _worker_seen(self.redis.url), 30, "worker heartbeat")
        return worker

    def start_server(self, **overrides: str) -> tuple[Child, str]:
        import httpx

        port = free_port()
        server = self._spawn(
            [sys.executable, "-m", "bgdownload", "serve", "--host", "127.0.0.1",
             "--port", str(port)], "server", self.env(**overrides),
        )
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if server.process.poll() is not None:
                raise RuntimeError(f"server died:\n{server.log()[-3000:]}")
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "API server")
        return server, url

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.started:
            self.started.remove(child)

    def flush(self) -> None:
        """Forget every job (workers must be stopped) and empty the download root."""
        import redis

        with redis.Redis.from_url(self.redis.url) as r:
            r.flushdb()
        shutil.rmtree(self.download_dir, ignore_errors=True)
        self.download_dir.mkdir(parents=True)

    def close(self) -> None:
        for child in reversed(self.started):
            child.stop()
        self.started.clear()
        self.redis.stop()


def _worker_seen(redis_url: str) -> bool:
    import redis

    with redis.Redis.from_url(redis_url) as r:
        return bool(r.zcard(keys.WORKERS))


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout} s")
        time.sleep(0.05)


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="bgd-bench-"))
    redis = start_redis(tmp / "redis")
    downloads = tmp / "downloads"
    downloads.mkdir()
    s = Stack(tmp, redis, downloads)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Context:
    """What every benchmark gets: the source, a stack, the size of the run."""

    base: str  # nginx base URL
    stack: Stack
    quick: bool
    runs: int


@contextlib.contextmanager
def context(quick: bool, runs: int | None = None) -> Iterator[Context]:
    with run_nginx(DATA_DIR) as base, stack() as s:
        yield Context(base, s, quick, runs or (2 if quick else 3))


# ----------------------------------------------------------------- timing helpers

def main_for(run: Callable[[Context], list[Row]], doc: str | None) -> None:
    """The command line every ``bench_*.py`` shares: ``--quick``, ``--runs``; prints its rows."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    args = parser.parse_args()
    with context(args.quick, args.runs) as ctx:
        print(markdown_table(run(ctx)))


def timed(cmd: list[str], timeout: float = 600) -> float:
    """Wall seconds of a command (which must succeed)."""
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return seconds


async def wait_job(service: Any, owner: str, job_id: str, limit: float) -> Any:
    """Follow the job's event stream until its terminal state; return the final state event."""
    async def follow() -> Any:
        last = None
        async for event in service.job_events(owner, job_id):
            if event.event in ("state", "snapshot"):
                last = event
                if event.data.get("state") in ("completed", "failed", "cancelled"):
                    return event
        return last

    return await asyncio.wait_for(follow(), limit)


def aria2c_cmd(out_dir: Path, *extra: str) -> list[str]:
    return ["aria2c", "-q", "--file-allocation=none", "--allow-overwrite=true",
            "--auto-file-renaming=false", "--console-log-level=error",
            "--summary-interval=0", "-d", str(out_dir), *extra]


async def job_seconds(s: Stack, data: dict[str, object], size: int) -> float:
    """Create one job through ``Service.create`` and time it until its terminal event.

    The file must complete with ``size`` bytes; it is deleted afterwards.
    """
    import uuid

    from bgdownload.service import Service

    service = await Service.connect(s.settings())
    try:
        name = f"job-{uuid.uuid4().hex[:8]}.bin"
        began = time.perf_counter()
        job, _ = await service.create("local", {**data, "filename": name})
        final = await wait_job(service, "local", job.id, limit=300)
        seconds = time.perf_counter() - began
    finally:
        await service.close()
    if final is None or final.data.get("state") != "completed":
        raise RuntimeError(f"job {job.id} ended {final}")
    out = s.download_dir / name
    if out.stat().st_size != size:
        raise RuntimeError(f"{out} has {out.stat().st_size} bytes, not {size}")
    out.unlink()
    return seconds


def warm_up(ctx: Context, s: Stack) -> None:
    """One small job, so the first measured one does not pay for cold connections."""
    ensure_blob(MiB)
    asyncio.run(job_seconds(s, {"url": f"{ctx.base}/files/blob-{MiB}.bin"}, MiB))
