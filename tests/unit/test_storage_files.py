"""The download root's storage: unique names, promotion, discarding, paths kept inside the root."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bgdownload.errors import InvalidURL
from bgdownload.storage import FileStorage, Storage, storage_at
from bgdownload.storage.files import reserve_unique_name, safe_path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_unique_names_on_clash(tmp_path: Path) -> None:
    assert reserve_unique_name(tmp_path, "a.txt") == "a.txt"  # creates a.txt.part
    assert reserve_unique_name(tmp_path, "a.txt") == "a (1).txt"  # a.txt.part exists
    (tmp_path / "b.tar.gz").write_bytes(b"x")
    assert reserve_unique_name(tmp_path, "b.tar.gz") == "b (1).tar.gz"
    assert (tmp_path / "b (1).tar.gz.part").exists()
    assert reserve_unique_name(tmp_path, "../evil") == "evil"


def test_unique_names_under_concurrency(tmp_path: Path) -> None:
    picked: list[str] = []
    barrier = threading.Barrier(8)

    def pick() -> None:
        barrier.wait()
        picked.append(reserve_unique_name(tmp_path, "same.bin"))

    threads = [threading.Thread(target=pick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(set(picked)) == 8


def test_paths_stay_inside_root(tmp_path: Path) -> None:
    assert safe_path(tmp_path, "x.bin") == tmp_path.resolve() / "x.bin"
    for bad in ("../x", "a/b", "..", ".", "", "a\\b"):
        with pytest.raises(InvalidURL):
            safe_path(tmp_path, bad)
    outside = tmp_path.parent / "outside.txt"
    os.symlink(outside, tmp_path / "link.txt")
    with pytest.raises(InvalidURL):
        safe_path(tmp_path, "link.txt")  # a planted symlink cannot redirect the write




def test_storage_at_a_root_is_the_file_storage(tmp_path: Path) -> None:
    storage: Storage = storage_at(tmp_path)
    assert isinstance(storage, FileStorage)
    assert storage.root == tmp_path


async def test_reserve_creates_the_part_and_picks_free_names(tmp_path: Path) -> None:
    root = tmp_path / "new"  # created on the first reservation
    storage = FileStorage(root)
    first = await storage.reserve("a.txt")  # the careful way: the root is not known yet
    second = await storage.reserve("a.txt")  # the quick way, taken: the careful way again
    third = await storage.reserve("../b.txt")  # the quick way, free
    assert first == ("a.txt", root.resolve() / "a.txt.part")
    assert second == ("a (1).txt", root.resolve() / "a (1).txt.part")
    assert third == ("b.txt", root.resolve() / "b.txt.part")
    assert listing(root) == ["a (1).txt.part", "a.txt.part", "b.txt.part"]
    assert all(p.stat().st_size == 0 for p in root.iterdir())


async def test_reserve_skips_a_name_whose_final_file_or_symlink_exists(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    await storage.reserve("warm-up")  # the root is known: quick reservations from here on
    (tmp_path / "x.bin").write_bytes(b"finished")
    os.symlink(tmp_path / "x.bin", tmp_path / "y.bin")
    assert (await storage.reserve("x.bin"))[0] == "x (1).bin"
    assert (await storage.reserve("y.bin"))[0] == "y (1).bin"
    assert (tmp_path / "x.bin").read_bytes() == b"finished"


async def test_promote_moves_the_part_to_its_name(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    name, part = await storage.reserve("data.bin")
    part.write_bytes(b"verified")
    assert await storage.promote(name) == "data.bin"
    assert listing(tmp_path) == ["data.bin"]
    assert storage.file_path(name).read_bytes() == b"verified"


async def test_promote_never_replaces_a_file_that_appeared(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    name, part = await storage.reserve("data.bin")
    part.write_bytes(b"mine")
    (tmp_path / "data.bin").write_bytes(b"theirs")  # another job finished first
    assert await storage.promote(name) == "data (1).bin"
    assert (tmp_path / "data.bin").read_bytes() == b"theirs"
    assert (tmp_path / "data (1).bin").read_bytes() == b"mine"
    assert listing(tmp_path) == ["data (1).bin", "data.bin"]


async def test_promote_of_a_resumed_name_in_a_fresh_storage(tmp_path: Path) -> None:
    (tmp_path / "old.bin.part").write_bytes(b"resumed")
    storage = FileStorage(tmp_path)  # a new worker: nothing reserved here yet
    assert storage.has_part("old.bin")
    assert await storage.promote("old.bin") == "old.bin"
    assert listing(tmp_path) == ["old.bin"]


async def test_discard_drops_partial_data_only(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    name, _part = await storage.reserve("a.bin")
    storage.sidecar_path(name).write_text("{}")
    (tmp_path / "b.bin").write_bytes(b"done")
    storage.discard(name)
    storage.discard("never-there.bin")  # nothing to drop is fine
    assert listing(tmp_path) == ["b.bin"]
    assert not storage.has_part(name)


async def test_delete_drops_the_file_and_its_partial_data(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    for name in ("a.bin", "a.bin.part", "a.bin.part.json", "b.bin"):
        (tmp_path / name).write_bytes(b"x")
    storage.delete("a.bin")
    storage.delete("gone.bin")
    assert listing(tmp_path) == ["b.bin"]


def test_paths_of_a_storage_never_leave_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    storage = FileStorage(root)
    assert storage.file_path("x.bin") == root.resolve() / "x.bin"
    assert storage.part_path("x.bin") == root.resolve() / "x.bin.part"
    assert storage.sidecar_path("x.bin") == root.resolve() / "x.bin.part.json"
    os.symlink(tmp_path / "outside.bin", root / "link.bin")
    os.symlink(tmp_path / "outside.part", root / "link2.bin.part")
    for bad in ("../x", "a/b", "..", ".", "", "a\\b", "a\x00b", "link.bin"):
        with pytest.raises(InvalidURL):
            storage.file_path(bad)
    with pytest.raises(InvalidURL):
        storage.part_path("link2.bin")  # a planted symlink cannot redirect the write
    with pytest.raises(InvalidURL):
        storage.discard("../x")
    assert not storage.has_part("../x")
    assert not storage.has_part("link2.bin")
