"""What one download attempt is given, keeps and returns, and the sidecar it leaves.

:class:`FetchSpec`, :class:`ProgressSink` and :class:`FetchResult` are the
engine's public types (imported from :mod:`bgdownload.engine.fetch`).
:class:`AttemptState` is what one attempt knows about the file it writes;
``<name>.part.json`` (the sidecar) stores the part of it a later attempt needs to
resume: the validator, the total size, how many bytes of a single-connection
``.part`` are durable (``done``), each segment's durable offset, and the overlap
checks of segments still waiting for their neighbours' bytes
(:mod:`bgdownload.engine.resume`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bgdownload.engine.limiter import TokenBucket
from bgdownload.engine.resume import boot_id, write_sidecar
from bgdownload.engine.sources import Source
from bgdownload.storage import LOCAL_OWNER, Storage


@dataclass
class FetchSpec:
    """What to download and under which constraints."""

    url: str
    root: Path
    #: name already chosen on disk by an earlier attempt (resume): reused as is
    filename: str | None = None
    #: the caller's wish; else Content-Disposition; else the URL path
    wished_filename: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expected_sha256: str | None = None
    max_bytes: int | None = None
    #: bytes/s cap of this job (the worker-wide cap applies on top)
    max_speed: int | None = None
    connections: int = 1
    #: whose file it is: it goes to that owner's folder of ``root`` (docs/api.md §17)
    owner: str = LOCAL_OWNER


class ProgressSink(Protocol):
    def update(self, loaded: int, total: int | None) -> None:
        """Called per chunk: must be O(1) and do no I/O."""

    async def name_chosen(self, filename: str, path: str) -> bool | None:
        """The file name was picked; reserved for the job before any byte is written.

        ``path`` is relative to the download root. False: another job holds that
        name, so the engine gives it back and tries the next free one.
        """

    async def restarted(self, note: str) -> None:
        """The partial data was dropped and the download starts over; ``note`` says why."""


@dataclass
class FetchResult:
    filename: str
    path: str
    sha256: str
    size: int


@dataclass
class Segment:
    start: int
    end: int  # exclusive; may shrink when another connection steals the tail
    pos: int  # next byte to receive
    #: bytes before this offset are on disk; only this goes into the sidecar, so a
    #: crash never records bytes that were still in memory
    durable: int = -1

    def __post_init__(self) -> None:
        if self.durable < 0:
            self.durable = self.pos

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.pos)


class Restart(Exception):
    """The source changed (or ignores ranges) under a resume: start over from zero.

    ``note`` is what the job's ``state`` event tells the user (docs/api.md §11).
    """

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


@dataclass
class AttemptState:
    """Everything one attempt knows about the file it writes."""

    spec: FetchSpec
    sink: ProgressSink
    #: where the bytes come from, and where they go
    source: Source
    storage: Storage
    filename: str | None = None
    validator: dict[str, str] = field(default_factory=dict)
    total: int | None = None
    segments: list[Segment] | None = None
    #: bytes of a single-connection ``.part`` known to be on disk (None: an old
    #: sidecar that did not say; then the file's size)
    done: int | None = None
    #: overlap checks waiting for their bytes: (offset, length, sha256 hex)
    checks: list[tuple[int, int, str]] = field(default_factory=list)
    #: a sidecar was read: its resume point may be trusted
    resumable: bool = False
    #: the boot during which the sidecar read was written
    boot: str = ""
    loaded: int = 0
    buckets: tuple[TokenBucket, ...] = ()
    max_bytes: int | None = None
    #: a sidecar may exist on disk (written by this attempt or an earlier one)
    sidecar_written: bool = False
    #: the sidecar describes the response being streamed now (its validator and total)
    sidecar_fresh: bool = False
    #: (filename, path) of the ``.part`` and the sidecar: the storage checks every
    #: path component (a syscall each), so once per name and, where it can, off the loop
    known_part: tuple[str, Path] | None = None
    known_sidecar: tuple[str, Path] | None = None

    @property
    def part(self) -> Path:
        assert self.filename is not None
        if self.known_part is None or self.known_part[0] != self.filename:
            self.known_part = (self.filename, self.storage.part_path(self.filename))
        return self.known_part[1]

    @property
    def sidecar(self) -> Path:
        assert self.filename is not None
        if self.known_sidecar is None or self.known_sidecar[0] != self.filename:
            self.known_sidecar = (self.filename, self.storage.sidecar_path(self.filename))
        return self.known_sidecar[1]

    def record(self, done: int | None = None) -> str:
        """The sidecar's text now (``done``: the durable bytes of a single ``.part``).

        Called on the event loop before the bytes are synced, so the segment offsets
        it captures are already written; marks the sidecar as present and fresh.
        """
        if done is not None:
            self.done = done
        data: dict[str, Any] = {
            "url": self.spec.url,
            "validator": self.validator,
            "total": self.total,
            "done": self.done,
            "boot": boot_id(),
            "segments": [[s.start, s.end, s.durable] for s in self.segments]
            if self.segments is not None else None,
            "checks": [list(c) for c in self.checks],
        }
        self.sidecar_written = self.sidecar_fresh = True
        return json.dumps(data)

    def write(self, text: str) -> None:
        """Write a :meth:`record` into the sidecar (atomically, durably)."""
        write_sidecar(self.sidecar, text)

    def save_sidecar(self, done: int | None = None) -> None:
        """Record and write at once: nothing past ``done`` (or a segment's offset) is claimed."""
        self.write(self.record(done))

    def resume_point(self, size: int) -> int:
        """Where a single-connection ``.part`` of ``size`` bytes may be continued.

        Every written byte while the machine has not rebooted since the sidecar was
        written (a killed worker); after a reboot only the synced ones it records.
        """
        if not self.resumable:
            return 0  # no sidecar: nothing says which bytes are good
        if self.done is None or (self.boot and self.boot == boot_id()):
            return size
        return min(size, self.done)

    def load_sidecar(self) -> None:
        try:
            data = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(data, dict):
            return
        self.resumable = True
        self.boot = str(data.get("boot") or "")
        done = data.get("done")
        self.done = done if isinstance(done, int) and done >= 0 else None
        checks = data.get("checks")
        if isinstance(checks, list):
            try:
                self.checks = [(int(a), int(b), str(c)) for a, b, c in checks]
            except (TypeError, ValueError):
                self.checks = []
        validator = data.get("validator")
        if isinstance(validator, dict):
            self.validator = {str(k): str(v) for k, v in validator.items()}
        total = data.get("total")
        self.total = total if isinstance(total, int) else None
        segments = data.get("segments")
        if isinstance(segments, list) and self.total is not None:
            try:
                self.segments = [Segment(int(a), int(b), int(c)) for a, b, c in segments]
            except (TypeError, ValueError):
                self.segments = None
