"""Benchmark 3: many small files — the per-job overhead.

1,000 files of 16 KiB (200 with ``--quick``) from nginx ``/files/``:

* one batch job (``files``) created with one ``POST /api/v1/downloads``;
* 1,000 separate jobs, each its own POST (16 requests in flight on keep-alive
  connections), worker ``BGDOWNLOAD_CONCURRENCY=16``;
* the peer: ``aria2c -j16 -i list``.

Each bgdownload figure runs from the first POST until every job is terminal (read
from the store's state counters), through a real API server and a real worker.

    python -m benchmarks.bench_small_files [--quick] [--runs N] [--only batch|separate]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from benchmarks.common import (
    Context,
    Row,
    aria2c_cmd,
    context,
    ensure_small_files,
    log,
    markdown_table,
    proc_cpu,
    spread,
    timed,
)
from bgdownload import keys

SIZE = 16 * 1024
PARALLEL = 16


async def _terminal_count(r: aioredis.Redis) -> int:
    counts = await r.hmget(keys.STATS_STATES, ["completed", "failed", "cancelled"])
    return sum(int(c or 0) for c in counts)


async def _wait_terminal(r: aioredis.Redis, target: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while await _terminal_count(r) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not finished within {limit} s")
        await asyncio.sleep(0.01)


async def batch_seconds(api: str, redis_url: str, urls: list[str]) -> float:
    async with aioredis.from_url(redis_url) as r, httpx.AsyncClient(base_url=api) as http:
        target = await _terminal_count(r) + 1
        began = time.perf_counter()
        resp = await http.post("/api/v1/downloads", json={"files": [{"url": u} for u in urls]})
        resp.raise_for_status()
        await _wait_terminal(r, target, 300)
        seconds = time.perf_counter() - began
        job = (await http.get(f"/api/v1/downloads/{resp.json()['id']}")).json()
    if job["state"] != "completed":
        raise RuntimeError(f"batch job ended {job['state']}: {job['error']}")
    return seconds


async def separate_seconds(api: str, redis_url: str, urls: list[str]) -> float:
    limits = httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL)
    async with aioredis.from_url(redis_url) as r, httpx.AsyncClient(
        base_url=api, limits=limits, timeout=60
    ) as http:
        target = await _terminal_count(r) + len(urls)
        gate = asyncio.Semaphore(PARALLEL)

        async def create(url: str) -> None:
            async with gate:
                (await http.post("/api/v1/downloads", json={"url": url})).raise_for_status()

        began = time.perf_counter()
        await asyncio.gather(*(create(u) for u in urls))
        created = time.perf_counter() - began
        await _wait_terminal(r, target, 600)
        seconds = time.perf_counter() - began
        failed = await r.hget(keys.STATS_STATES, "failed")
    if int(failed or 0):
        raise RuntimeError(f"{failed!r} small-file jobs failed")
    log(f"    ({len(urls)} POSTs took {created:.2f} s)")
    return seconds


def _empty(directory: Path, expected: int) -> None:
    found = sum(1 for p in directory.iterdir() if p.is_file())
    if found != expected:
        raise RuntimeError(f"{directory} holds {found} files, expected {expected}")
    shutil.rmtree(directory)
    directory.mkdir()


def run(ctx: Context, only: str | None = None) -> list[Row]:
    count = 200 if ctx.quick else 1000
    names = ensure_small_files(count, SIZE)
    urls = [f"{ctx.base}/files/{n}" for n in names]
    out_dir = ctx.stack.tmp / "aria2c-small"
    out_dir.mkdir(exist_ok=True)
    listing = ctx.stack.tmp / "small-list.txt"
    listing.write_text("".join(u + "\n" for u in urls))
    ctx.stack.flush()
    worker = ctx.stack.start_worker(BGDOWNLOAD_CONCURRENCY=str(PARALLEL))
    server, api = ctx.stack.start_server()
    times: dict[str, list[float]] = {"aria2c": [], "batch": [], "separate": []}
    try:
        for run_no in range(ctx.runs):
            times["aria2c"].append(timed(aria2c_cmd(out_dir, f"-j{PARALLEL}", "-i", str(listing))))
            _empty(out_dir, count)
            if only in (None, "batch"):
                times["batch"].append(asyncio.run(batch_seconds(api, ctx.stack.redis.url, urls)))
                _empty(ctx.stack.download_dir, count)
            if only in (None, "separate"):
                cpu = proc_cpu(worker.main_pid())
                times["separate"].append(
                    asyncio.run(separate_seconds(api, ctx.stack.redis.url, urls))
                )
                cpu = proc_cpu(worker.main_pid()) - cpu
                log(f"    (worker CPU {cpu * 1000 / count:.2f} ms per separate job)")
                _empty(ctx.stack.download_dir, count)
            log(f"  small files run {run_no + 1}: " + ", ".join(
                f"{key} {values[-1]:.2f} s" for key, values in times.items() if values
            ))
    finally:
        ctx.stack.stop(worker)
        ctx.stack.stop(server)
    peer = statistics.median(times["aria2c"])
    rows = []
    for key, label in (("batch", "one batch job"), ("separate", f"{count} separate jobs")):
        if not times[key]:
            continue
        med = statistics.median(times[key])
        rows.append(Row(
            "3", f"{count} x 16 KiB, {label} via the API vs `aria2c -j16 -i` (s)",
            spread(times[key]), spread(times["aria2c"]), f"{med / peer:.2f}x", "<= 2x",
            med / peer <= 2.0, f"{count / med:.0f} vs {count / peer:.0f} files/s",
        ))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--only", choices=("batch", "separate"),
                        help="run one bgdownload variant (aria2c always runs as the peer)")
    args = parser.parse_args()
    with context(args.quick, args.runs) as ctx:
        print(markdown_table(run(ctx, args.only)))


if __name__ == "__main__":
    main()
