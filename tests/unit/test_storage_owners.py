"""Owner folders and reserved names of the storage (docs/api.md §17), on a real directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgdownload.storage import FileStorage, owner_folder, storage_at
from bgdownload.worker.retrying import describe as _describe


@pytest.mark.parametrize("owner", ["alice", "bob-2", "svc.team_a"])
def test_a_plain_owner_name_is_its_folder(owner: str) -> None:
    assert owner_folder(owner) == owner


def test_local_is_the_root_itself(tmp_path: Path) -> None:
    storage = storage_at(tmp_path, "local")
    assert owner_folder("local") == ""
    assert storage.path_of("x.bin") == "x.bin"
    assert storage.file_path("x.bin") == tmp_path.resolve() / "x.bin"


@pytest.mark.parametrize("owner", ["Alice", "a/b", "..", ".hidden", "", "con", "é",
                                   "x-0123456789", "a" * 100, "alice\u2028"])
def test_other_owner_names_become_a_safe_folder_with_a_hash(owner: str) -> None:
    folder = owner_folder(owner)
    assert folder and folder == folder.lower() and len(folder) <= 64
    assert "/" not in folder and not folder.startswith(".") and folder not in ("..", ".")
    assert folder != owner


def test_owners_never_share_a_folder() -> None:
    owners = ["alice", "Alice", "ALICE", "alice ", "a/lice", "a_lice", "con", "CON",
              owner_folder("Alice"), "local", "Local"]
    folders = [owner_folder(o) for o in owners]
    assert len(set(folders)) == len(owners)


def test_paths_name_the_owner_folder_and_only_its_names(tmp_path: Path) -> None:
    storage = storage_at(tmp_path, "alice")
    assert storage.path_of("x.bin") == "alice/x.bin"
    assert storage.name_at("alice/x.bin") == "x.bin"
    for other in ("bob/x.bin", "x.bin", "alice/../x.bin", "alice/", "alice/a/b"):
        assert storage.name_at(other) is None
    assert storage.file_path("x.bin") == tmp_path.resolve() / "alice" / "x.bin"


async def test_a_name_refused_by_the_claim_is_given_back_and_the_next_one_taken(
    tmp_path: Path,
) -> None:
    storage = FileStorage.of_owner(tmp_path, "alice")
    asked: list[str] = []

    async def claim(name: str) -> bool:
        asked.append(name)
        return name != "r.bin"  # held by another job, though nothing is on disk

    name, part = await storage.reserve("r.bin", claim)
    assert (name, asked) == ("r (1).bin", ["r.bin", "r (1).bin"])
    assert sorted(p.name for p in (tmp_path / "alice").iterdir()) == ["r (1).bin.part"]
    assert part == tmp_path.resolve() / "alice" / "r (1).bin.part"


async def test_a_failing_claim_leaves_nothing_behind(tmp_path: Path) -> None:
    storage = FileStorage.of_owner(tmp_path, "bob")

    async def claim(name: str) -> bool:
        raise LookupError("the job is gone")

    with pytest.raises(LookupError):
        await storage.reserve("gone.bin", claim)
    assert list((tmp_path / "bob").iterdir()) == []


async def test_promotion_past_a_file_put_there_by_hand_claims_the_new_name(
    tmp_path: Path,
) -> None:
    storage = FileStorage.of_owner(tmp_path, "alice")
    claimed: list[str] = []

    async def claim(name: str) -> bool:
        claimed.append(name)
        return True

    name, part = await storage.reserve("p.bin", claim)
    part.write_bytes(b"mine")
    (tmp_path / "alice" / "p.bin").write_bytes(b"theirs")
    assert await storage.promote(name, claim) == "p (1).bin"
    assert claimed == ["p.bin", "p (1).bin"]
    assert (tmp_path / "alice" / "p.bin").read_bytes() == b"theirs"
    assert (tmp_path / "alice" / "p (1).bin").read_bytes() == b"mine"


def test_unexpected_errors_never_show_absolute_paths() -> None:
    missing = FileNotFoundError(2, "No such file or directory", "/srv/downloads/bob/x.part")
    assert _describe(missing) == "No such file or directory ('x.part')"
    text = _describe(ValueError("bad /srv/downloads/bob/x.bin from https://h.example/a/b"))
    assert "/srv" not in text and "https://h.example/a/b" in text
