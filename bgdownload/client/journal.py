"""The ids of the jobs this machine created: ``<state dir>/journal.jsonl``.

The notebook equivalent of the original design's localStorage: ``bgd.attach()``
with no argument reads it to find the downloads a closed kernel left running.

Appends need no lock: each record is one ``write(2)`` of one short line to a
file opened with ``O_APPEND``, which POSIX makes atomic with respect to other
appenders, so kernels, scripts and the CLI can record at the same time. A torn
or foreign line is skipped when reading.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: longest record we write in one go: PIPE_BUF, the size POSIX guarantees atomic on pipes,
#: and far more than an id plus a URL needs
_MAX_RECORD = 4096
#: reading stops looking further back than this many records
_MAX_READ = 10_000


class Journal:
    """Append-only record of created job ids."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Journal:
        return cls(state_dir / "journal.jsonl")

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def record(self, job_id: str, api_url: str) -> None:
        """Remember ``job_id``; a failure to write is logged, never raised (the job exists)."""
        line = json.dumps({"id": job_id, "api_url": api_url, "created": round(time.time(), 3)})
        data = (line + "\n").encode()
        if len(data) > _MAX_RECORD:
            log.warning("not journalling job %s: record too long", job_id)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not record job %s in %s: %s", job_id, self.path, exc)

    def ids(self) -> list[str]:
        """Recorded ids, oldest first, without duplicates."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("could not read %s: %s", self.path, exc)
            return []
        seen: dict[str, None] = {}
        for line in lines[-_MAX_READ:]:
            try:
                job_id = json.loads(line)["id"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(job_id, str):
                seen[job_id] = None
        return list(seen)
