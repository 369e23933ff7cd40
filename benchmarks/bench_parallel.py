"""Benchmark 2: parallel ranged connections against a per-connection throttle.

100 MiB (32 MiB with ``--quick``) from nginx ``/slow/`` (``limit_rate 20m`` per
connection): a bgdownload job with ``connections=8``, end to end through a worker,
against ``aria2c -x8 -s8 -k1M``, in turn, ``--runs`` times.

    python -m benchmarks.bench_parallel [--quick] [--runs N]
"""

from __future__ import annotations

import asyncio
import statistics

from benchmarks.common import (
    Context,
    MiB,
    Row,
    aria2c_cmd,
    ensure_blob,
    job_seconds,
    log,
    main_for,
    spread,
    timed,
    warm_up,
)

CONNECTIONS = 8


def run(ctx: Context) -> list[Row]:
    size = (32 if ctx.quick else 100) * MiB
    blob = ensure_blob(size)
    url = f"{ctx.base}/slow/{blob.name}"
    out_dir = ctx.stack.tmp / "aria2c-out"
    out_dir.mkdir(exist_ok=True)
    ours: list[float] = []
    peer: list[float] = []
    worker = ctx.stack.start_worker()
    try:
        warm_up(ctx, ctx.stack)
        for run_no in range(ctx.runs):
            peer.append(timed(aria2c_cmd(
                out_dir, f"-x{CONNECTIONS}", f"-s{CONNECTIONS}", "-k1M", "-o", "a.bin", url)))
            if (out_dir / "a.bin").stat().st_size != size:
                raise RuntimeError("aria2c wrote a short file")
            (out_dir / "a.bin").unlink()
            ours.append(asyncio.run(job_seconds(
                ctx.stack, {"url": url, "connections": CONNECTIONS}, size)))
            log(f"  parallel run {run_no + 1}: aria2c {peer[-1]:.2f} s, bgd {ours[-1]:.2f} s")
    finally:
        ctx.stack.stop(worker)
    ratio = statistics.median(ours) / statistics.median(peer)
    mib = size / MiB
    return [Row(
        "2", f"{mib:.0f} MiB from `limit_rate 20m`, 8 connections vs `aria2c -x8 -s8` (s)",
        spread(ours), spread(peer), f"{ratio:.2f}x", "<= 1.1x", ratio <= 1.1,
        f"{mib / statistics.median(ours):.0f} vs {mib / statistics.median(peer):.0f} MiB/s",
    )]


def main() -> None:
    main_for(run, __doc__)


if __name__ == "__main__":
    main()
