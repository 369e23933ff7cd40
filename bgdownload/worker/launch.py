"""Worker processes started from Python: what ``taskiq worker bgdownload.worker:broker`` does."""

from __future__ import annotations

#: the broker taskiq's worker command imports
ENTRY_POINT = "bgdownload.worker:broker"


def run_workers(*, processes: int, max_async_tasks: int) -> int:
    """Run ``processes`` worker processes in the foreground until stopped; the exit status."""
    # taskiq's CLI machinery is only needed here, not by every importer of the package
    from taskiq.cli.worker.args import WorkerArgs
    from taskiq.cli.worker.run import run_worker

    args = WorkerArgs.from_cli([
        ENTRY_POINT,
        "--workers", str(processes),
        "--max-async-tasks", str(max_async_tasks),
    ])
    return run_worker(args) or 0
