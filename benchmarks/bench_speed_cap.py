"""Benchmark 6: how closely speed caps hold.

From nginx ``/files/`` (far faster than the caps):

* per job: one job with ``max_speed`` = 10 MiB/s over a file that takes 10 s at the cap;
* per worker: ``BGDOWNLOAD_MAX_SPEED`` = 10 MiB/s with two jobs at once (half the
  file each), so the cap must hold across downloads.

The benchmark samples the size of the files on disk (``.part``, then the final file)
every 50 ms: the average rate is bytes / (last byte seen - first ``.part`` seen),
and the largest 1 s window is the most bytes that landed in any 1 s span.
``--quick`` uses 4 s downloads.

    python -m benchmarks.bench_speed_cap [--quick]
"""

from __future__ import annotations

import asyncio
import bisect
import time
from pathlib import Path

from benchmarks.common import (
    Context,
    MiB,
    Row,
    Stack,
    ensure_blob,
    log,
    main_for,
    wait_job,
)
from bgdownload.service import Service

CAP = 10 * MiB


def _size(root: Path, name: str) -> int:
    for candidate in (root / name, root / (name + ".part")):
        try:
            return candidate.stat().st_size
        except FileNotFoundError:
            continue
    return 0


async def capped_run(s: Stack, urls: list[str], max_speed: int | None,
                     total: int) -> tuple[float, float]:
    """Run the jobs at once; return (average bytes/s, largest bytes in any 1 s window)."""
    service = await Service.connect(s.settings())
    names = [f"cap-{i}-{time.monotonic_ns()}.bin" for i in range(len(urls))]
    samples: list[tuple[float, int]] = []
    try:
        jobs = []
        for url, name in zip(urls, names, strict=True):
            data: dict[str, object] = {"url": url, "filename": name}
            if max_speed:
                data["max_speed"] = max_speed
            jobs.append((await service.create("local", data))[0])
        waiters = asyncio.gather(*(wait_job(service, "local", j.id, limit=120) for j in jobs))
        while not waiters.done():
            samples.append((time.perf_counter(),
                            sum(_size(s.download_dir, n) for n in names)))
            await asyncio.sleep(0.05)
        finals = await waiters
        samples.append((time.perf_counter(), sum(_size(s.download_dir, n) for n in names)))
    finally:
        await service.close()
    if any(f is None or f.data.get("state") != "completed" for f in finals):
        raise RuntimeError(f"capped jobs ended {finals}")
    for name in names:
        (s.download_dir / name).unlink()
    started = next(t for t, b in samples if b > 0)
    ended = next(t for t, b in samples if b >= total)
    times = [t for t, _ in samples]
    window = 0
    for t, b in samples:
        j = bisect.bisect_left(times, t - 1.0)
        window = max(window, b - samples[j][1])
    # the first sample with bytes may already hold up to 50 ms of them
    return total / (ended - started + 0.05), float(window)


def run(ctx: Context) -> list[Row]:
    seconds = 4 if ctx.quick else 10
    total = CAP * seconds
    blob, half = ensure_blob(total), ensure_blob(total // 2)
    rows = []
    worker = ctx.stack.start_worker()
    try:
        rate, peak = asyncio.run(capped_run(
            ctx.stack, [f"{ctx.base}/files/{blob.name}"], CAP, total))
    finally:
        ctx.stack.stop(worker)
    rows.append(_row("per-job `max_speed`", seconds, rate, peak))
    worker = ctx.stack.start_worker(BGDOWNLOAD_MAX_SPEED=str(CAP))
    try:
        rate, peak = asyncio.run(capped_run(
            ctx.stack, [f"{ctx.base}/files/{half.name}"] * 2, None, total))
    finally:
        ctx.stack.stop(worker)
    rows.append(_row("per-worker `BGDOWNLOAD_MAX_SPEED`, 2 jobs", seconds, rate, peak))
    return rows


def _row(what: str, seconds: int, rate: float, peak: float) -> Row:
    error = (rate - CAP) / CAP * 100
    log(f"  speed cap {what}: {rate / MiB:.2f} MiB/s ({error:+.1f} %), "
        f"largest 1 s window {peak / MiB:.2f} MiB")
    return Row(
        "6", f"{what} {CAP // MiB} MiB/s over {seconds} s: average (MiB/s)",
        f"{rate / MiB:.2f}", f"{CAP / MiB:.2f} (cap)", f"{error:+.1f} %",
        "within 5 %, 1 s peak <= 2x cap",
        abs(error) <= 5 and peak <= 2 * CAP, f"largest 1 s window {peak / MiB:.1f} MiB",
    )


def main() -> None:
    main_for(run, __doc__)


if __name__ == "__main__":
    main()
