"""The journal: lock-free appends from many processes, torn lines skipped."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from bgdownload.client.journal import Journal


def _append_many(path: str, prefix: str) -> None:
    journal = Journal(Path(path))
    for i in range(200):
        journal.record(f"{prefix}-{i}", "http://127.0.0.1:8765")


def test_concurrent_appends_from_processes_lose_nothing(tmp_path):
    path = tmp_path / "state" / "journal.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), f"p{n}")) for n in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    ids = Journal(path).ids()
    assert len(ids) == 600
    assert {f"p{n}-{i}" for n in range(3) for i in range(200)} == set(ids)


def test_torn_and_foreign_lines_are_skipped_and_ids_deduplicated(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("a", "http://x")
    with open(journal.path, "a") as f:
        f.write('{"id": "tor\n[1, 2]\n')
    journal.record("b", "http://x")
    journal.record("a", "http://y")
    assert journal.ids() == ["a", "b"]


def test_missing_journal_is_empty_and_unwritable_one_does_not_raise(tmp_path):
    assert Journal(tmp_path / "none.jsonl").ids() == []
    blocker = tmp_path / "file"
    blocker.write_text("")
    Journal(blocker / "journal.jsonl").record("a", "http://x")  # logged, not raised
