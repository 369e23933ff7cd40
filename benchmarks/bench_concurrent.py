"""Benchmark 4: 1,000 concurrent slow downloads in one worker process.

1,000 jobs (200 with ``--quick``) of 640 KiB each from nginx ``/throttled/``
(64 KiB/s per connection, so each takes about 10 s) in one worker with
``BGDOWNLOAD_CONCURRENCY=1000``. Samples the RSS of the worker process (taskiq's
worker child, plus its supervising parent for the total) every 100 ms and reads
its CPU time from ``/proc``; CPU per download-second divides that CPU time by the
sum of every job's active time (``finished_at - started_at``).

    python -m benchmarks.bench_concurrent [--quick]
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import (
    Context,
    MiB,
    Row,
    RssSampler,
    ensure_file,
    log,
    main_for,
    proc_cpu,
    proc_rss,
)
from bgdownload.service import Service

SIZE = 640 * 1024


async def run_many(ctx: Context, count: int) -> float:
    """Create ``count`` jobs, wait for all; return the sum of their active seconds."""
    path = ensure_file("throttled-640k.bin", SIZE)
    service = await Service.connect(ctx.stack.settings())
    try:
        ids = []
        for i in range(count):
            job, _ = await service.create(
                "local", {"url": f"{ctx.base}/throttled/{path.name}", "filename": f"c{i}.bin"})
            ids.append(job.id)
        deadline = time.monotonic() + 150
        while True:
            counts = await service.store.state_counts()
            if counts["completed"] + counts["failed"] + counts["cancelled"] >= count:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"concurrent jobs not done: {counts}")
            await asyncio.sleep(0.2)
        jobs = await service.store.get_many(ids)
    finally:
        await service.close()
    failed = [j for j in jobs if j is None or j.state.value != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} concurrent jobs did not complete: {failed[0]}")
    seconds = 0.0
    for done in jobs:
        assert done is not None and done.finished_at and done.started_at
        seconds += (done.finished_at - done.started_at).total_seconds()
    return seconds


def run(ctx: Context) -> list[Row]:
    count = 200 if ctx.quick else 1000
    ctx.stack.flush()
    worker = ctx.stack.start_worker(BGDOWNLOAD_CONCURRENCY=str(count))
    pids = [worker.pid, worker.main_pid()]
    idle = proc_rss(pids[1])
    try:
        cpu0 = proc_cpu(pids[1])
        began = time.perf_counter()
        with RssSampler(pids) as total, RssSampler(pids[1:]) as child:
            active = asyncio.run(run_many(ctx, count))
        wall = time.perf_counter() - began
        cpu = proc_cpu(pids[1]) - cpu0
    finally:
        ctx.stack.stop(worker)
        ctx.stack.flush()
    log(f"  concurrent: {count} jobs in {wall:.1f} s, worker RSS idle {idle / MiB:.0f} MiB, "
        f"peak {child.peak / MiB:.0f} MiB (+parent {total.peak / MiB:.0f}), CPU {cpu:.1f} s "
        f"for {active:.0f} download-s")
    per = cpu / active * 1000
    return [Row(
        "4", f"{count} concurrent downloads at 64 KiB/s in one worker: peak RSS (MiB)",
        f"{total.peak / MiB:.0f}", "-", "-", "< 300 MiB", total.peak < 300 * MiB,
        f"worker process {child.peak / MiB:.0f} MiB (idle {idle / MiB:.0f}) + taskiq parent; "
        f"CPU {per:.2f} ms per download-second; {wall:.1f} s wall",
    )]


def main() -> None:
    main_for(run, __doc__)


if __name__ == "__main__":
    main()


