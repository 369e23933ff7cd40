"""Engine.fetch against the real source server (tests/support/source_server.py)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from bgdownload.config import Settings
from bgdownload.engine.fetch import Engine, FetchSpec
from bgdownload.engine.resume import boot_id
from bgdownload.errors import (
    BlockedDestination,
    ChecksumMismatch,
    HTTPStatusError,
    NetworkError,
    TooLarge,
)
from tests.support.source_server import SourceServer

LOOPBACK = Settings(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))
SEGMENT = 64 * 1024  # small segments so a few hundred KiB use several connections


class Sink:
    def __init__(self) -> None:
        self.updates: list[tuple[int, int | None]] = []
        self.names: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def update(self, loaded: int, total: int | None) -> None:
        self.updates.append((loaded, total))

    async def name_chosen(self, filename: str, path: str) -> None:
        self.names.append((filename, path))

    async def restarted(self, note: str) -> None:
        self.notes.append(note)


@pytest.fixture(params=["inline", "threaded"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    eng = Engine(LOOPBACK, min_segment=SEGMENT, sidecar_interval=0.05,
                 threaded_writes=request.param == "threaded")
    yield eng
    await eng.aclose()


def spec(url: str, root: Path, **kw: object) -> FetchSpec:
    return FetchSpec(url=url, root=root, **kw)  # type: ignore[arg-type]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_plain_download(engine: Engine, source: SourceServer, download_dir: Path) -> None:
    sink = Sink()
    result = await engine.fetch(spec(source.url("/bytes/300000?seed=a"), download_dir), sink)
    assert result.filename == "300000"
    assert result.sha256 == source.expected_sha256(300000, "a")
    assert result.size == 300000
    assert sha_of(download_dir / "300000") == result.sha256
    assert listing(download_dir) == ["300000"]  # no .part, no sidecar
    assert sink.names == [("300000", "300000")]
    assert sink.updates[-1] == (300000, 300000)


async def test_wished_name_and_unique_on_clash(engine: Engine, source: SourceServer,
                                               download_dir: Path) -> None:
    url = source.url("/bytes/1000")
    first = await engine.fetch(spec(url, download_dir, wished_filename="data.bin"), Sink())
    second = await engine.fetch(spec(url, download_dir, wished_filename="data.bin"), Sink())
    assert (first.filename, second.filename) == ("data.bin", "data (1).bin")


async def test_content_disposition_name_is_sanitised(engine: Engine, source: SourceServer,
                                                     download_dir: Path) -> None:
    cd = quote("attachment; filename=\"../../etc/passwd\"", safe="")
    result = await engine.fetch(spec(source.url(f"/bytes/100?cd={cd}"), download_dir), Sink())
    assert result.filename == "etc_passwd"
    assert (download_dir / "etc_passwd").is_file()


async def test_chunked_without_length(engine: Engine, source: SourceServer,
                                      download_dir: Path) -> None:
    sink = Sink()
    result = await engine.fetch(spec(source.url("/bytes/200000?chunked=1&seed=c"),
                                     download_dir), sink)
    assert result.sha256 == source.expected_sha256(200000, "c")
    assert all(total is None for _, total in sink.updates)


async def test_resume_after_drop(engine: Engine, source: SourceServer,
                                 download_dir: Path) -> None:
    url = source.url("/bytes/400000?seed=r&drop=1&drop_at=150000")
    sink = Sink()
    with pytest.raises(NetworkError) as info:
        await engine.fetch(spec(url, download_dir), sink)
    assert info.value.transient
    name = sink.names[0][0]
    part = download_dir / f"{name}.part"
    assert part.stat().st_size == 150000
    assert json.loads((download_dir / f"{name}.part.json").read_text())["validator"]["etag"]

    result = await engine.fetch(spec(url, download_dir, filename=name), Sink())
    assert result.sha256 == source.expected_sha256(400000, "r")
    ranged = source.ranged_requests("/bytes/400000")
    assert [r.range for r in ranged] == ["bytes=150000-"]
    assert ranged[0].headers["if-range"].startswith('"')
    assert not part.exists()


async def test_if_range_with_changed_source_restarts(engine: Engine, source: SourceServer,
                                                     download_dir: Path) -> None:
    url = source.url("/bytes/300000?seed=e&key=e&drop=1&drop_at=100000")
    sink = Sink()
    with pytest.raises(NetworkError):
        await engine.fetch(spec(url, download_dir), sink)
    source.change("e")
    result = await engine.fetch(spec(url, download_dir, filename=sink.names[0][0]), Sink())
    # The source saw the resume attempt, answered 200 (If-Range failed) and the
    # file is wholly the new version, not old prefix + new tail.
    assert source.ranged_requests()
    assert result.sha256 == source.expected_sha256(300000, "e", version=1)


async def test_200_to_range_restarts(engine: Engine, source: SourceServer,
                                     download_dir: Path) -> None:
    name = "noranges.bin"
    (download_dir / f"{name}.part").write_bytes(b"x" * 5000)  # garbage prefix
    (download_dir / f"{name}.part.json").write_text(
        json.dumps({"validator": {"etag": '"whatever"'}, "total": 100000, "segments": None}))
    result = await engine.fetch(
        spec(source.url("/bytes/100000?ranges=0&seed=n"), download_dir, filename=name), Sink())
    assert source.ranged_requests()  # it did try to resume
    assert result.sha256 == source.expected_sha256(100000, "n")
    assert sha_of(download_dir / name) == result.sha256


async def test_short_body_is_network_error_and_keeps_part(engine: Engine, source: SourceServer,
                                                          download_dir: Path) -> None:
    sink = Sink()
    with pytest.raises(NetworkError):
        await engine.fetch(spec(source.url("/bytes/100000?short=60000"), download_dir), sink)
    name = sink.names[0][0]
    assert (download_dir / f"{name}.part").stat().st_size == 60000
    assert not (download_dir / name).exists()


async def test_404_is_not_transient(engine: Engine, source: SourceServer,
                                    download_dir: Path) -> None:
    with pytest.raises(HTTPStatusError) as info:
        await engine.fetch(spec(source.url("/status/404"), download_dir), Sink())
    assert info.value.status_code == 404 and not info.value.transient
    assert listing(download_dir) == []


async def test_503_is_transient_then_succeeds(engine: Engine, source: SourceServer,
                                              download_dir: Path) -> None:
    url = source.url("/bytes/1000?status=503&times=1")
    with pytest.raises(HTTPStatusError) as info:
        await engine.fetch(spec(url, download_dir), Sink())
    assert info.value.status_code == 503 and info.value.transient
    result = await engine.fetch(spec(url, download_dir), Sink())
    assert result.size == 1000


async def test_429_retry_after(engine: Engine, source: SourceServer, download_dir: Path) -> None:
    with pytest.raises(HTTPStatusError) as info:
        await engine.fetch(spec(source.url("/bytes/10?status=429&retry_after=7"),
                                download_dir), Sink())
    assert info.value.transient and info.value.retry_after == 7.0


async def test_max_bytes_up_front(engine: Engine, source: SourceServer,
                                  download_dir: Path) -> None:
    with pytest.raises(TooLarge):
        await engine.fetch(spec(source.url("/bytes/5000"), download_dir, max_bytes=4000), Sink())
    assert listing(download_dir) == []
    # the body was never streamed: only the one GET was made
    assert len(source.requests) == 1


async def test_max_bytes_mid_stream(engine: Engine, source: SourceServer,
                                    download_dir: Path) -> None:
    with pytest.raises(TooLarge):
        await engine.fetch(spec(source.url("/bytes/300000?chunked=1"), download_dir,
                                max_bytes=100000), Sink())
    assert listing(download_dir) == []  # partial deleted


async def test_settings_max_bytes_applies(source: SourceServer, download_dir: Path) -> None:
    eng = Engine(LOOPBACK.replace(max_bytes=1000))
    try:
        with pytest.raises(TooLarge):
            await eng.fetch(spec(source.url("/bytes/2000"), download_dir), Sink())
    finally:
        await eng.aclose()


async def test_checksum_mismatch_deletes(engine: Engine, source: SourceServer,
                                         download_dir: Path) -> None:
    with pytest.raises(ChecksumMismatch):
        await engine.fetch(spec(source.url("/bytes/1000"), download_dir,
                                expected_sha256="0" * 64), Sink())
    assert listing(download_dir) == []


async def test_checksum_match(engine: Engine, source: SourceServer, download_dir: Path) -> None:
    expected = source.expected_sha256(1000, "m").upper()
    result = await engine.fetch(spec(source.url("/bytes/1000?seed=m"), download_dir,
                                     expected_sha256=expected), Sink())
    assert result.sha256 == expected.lower()


async def test_redirect_followed(engine: Engine, source: SourceServer,
                                 download_dir: Path) -> None:
    target = source.url("/bytes/1000?seed=t", host="127.0.0.2")
    result = await engine.fetch(spec(source.redirect_url(target), download_dir), Sink())
    assert result.sha256 == source.expected_sha256(1000, "t")
    assert source.requests[-1].host == "127.0.0.2"


async def test_redirect_drops_credentials_across_origins(engine: Engine, source: SourceServer,
                                                         download_dir: Path) -> None:
    target = source.url("/bytes/10", host="127.0.0.2")
    await engine.fetch(spec(source.redirect_url(target), download_dir,
                            headers={"Authorization": "Bearer s3cret", "X-Keep": "1"}), Sink())
    first, last = source.requests[0], source.requests[-1]
    assert first.headers["authorization"] == "Bearer s3cret"
    # every caller header stays with the first origin (docs/api.md §17), as with curl
    assert "authorization" not in last.headers and "x-keep" not in last.headers


@pytest.mark.parametrize("target", ["http://10.0.0.1/x", "http://169.254.169.254/latest",
                                    "http://0xa000001/", "http://2852039166/",
                                    "http://[::ffff:10.0.0.1]/"])
async def test_redirect_into_blocked_range_refused(source: SourceServer, download_dir: Path,
                                                   target: str) -> None:
    # Only the redirector (127.0.0.1) is allowed; the hop target must be refused
    # before any connection (10.0.0.1 would otherwise just time out).
    eng = Engine(Settings(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),)))
    try:
        with pytest.raises(BlockedDestination):
            await eng.fetch(spec(source.redirect_url(target), download_dir), Sink())
    finally:
        await eng.aclose()
    assert len(source.requests) == 1
    assert listing(download_dir) == []


async def test_numeric_host_allowed_by_allow_networks(engine: Engine, source: SourceServer,
                                                       download_dir: Path) -> None:
    url = source.url("/bytes/100").replace("127.0.0.1", "2130706433")
    result = await engine.fetch(spec(url, download_dir), Sink())
    assert result.size == 100


async def test_blocked_by_default(source: SourceServer, download_dir: Path) -> None:
    eng = Engine(Settings())
    try:
        with pytest.raises(BlockedDestination):
            await eng.fetch(spec(source.url("/bytes/10").replace("127.0.0.1", "localhost"),
                                 download_dir), Sink())
    finally:
        await eng.aclose()
    assert source.requests == []


async def test_segmented_download(engine: Engine, source: SourceServer,
                                  download_dir: Path) -> None:
    size = 1_000_003
    sink = Sink()
    result = await engine.fetch(spec(source.url(f"/bytes/{size}?seed=s"), download_dir,
                                     connections=4), sink)
    assert result.sha256 == source.expected_sha256(size, "s")
    assert sha_of(download_dir / result.filename) == result.sha256
    assert len(source.ranged_requests()) >= 3
    assert sink.updates[-1] == (size, size)


async def test_segmented_resume_from_sidecar(engine: Engine, source: SourceServer,
                                             download_dir: Path) -> None:
    size = 800_000
    # Every connection of the first attempt is cut at the same point; the ranged
    # ones start past it, so only segment 0 fails while the others may finish.
    url = source.url(f"/bytes/{size}?seed=g&key=g&drop=1&drop_at=100000")
    sink = Sink()
    with pytest.raises(NetworkError):
        await engine.fetch(spec(url, download_dir, connections=4), sink)
    name = sink.names[0][0]
    side = json.loads((download_dir / f"{name}.part.json").read_text())
    assert side["total"] == size and len(side["segments"]) >= 2
    assert side["segments"][0][2] == 100000  # segment 0 stopped at the drop
    seen = len(source.requests)

    result = await engine.fetch(spec(url, download_dir, filename=name, connections=4), Sink())
    assert result.sha256 == source.expected_sha256(size, "g")
    resumed = [r.range for r in source.requests[seen:]]
    assert "bytes=100000-" in " ".join(r or "" for r in resumed)
    assert not (download_dir / f"{name}.part.json").exists()


async def test_segmented_falls_back_without_ranges(engine: Engine, source: SourceServer,
                                                   download_dir: Path) -> None:
    size = 500_000
    result = await engine.fetch(spec(source.url(f"/bytes/{size}?ranges=0&seed=f"),
                                     download_dir, connections=4), Sink())
    assert result.sha256 == source.expected_sha256(size, "f")
    assert len(source.requests) == 1 and source.ranged_requests() == []


async def test_segmented_falls_back_when_size_unknown(engine: Engine, source: SourceServer,
                                                      download_dir: Path) -> None:
    result = await engine.fetch(spec(source.url("/bytes/500000?chunked=1&seed=u"),
                                     download_dir, connections=4), Sink())
    assert result.sha256 == source.expected_sha256(500000, "u")
    assert len(source.requests) == 1


async def test_discard_removes_part_and_sidecar(engine: Engine, source: SourceServer,
                                                download_dir: Path) -> None:
    sink = Sink()
    with pytest.raises(NetworkError):
        await engine.fetch(spec(source.url("/bytes/100000?drop=1"), download_dir), sink)
    engine.discard(download_dir, sink.names[0][0])
    assert listing(download_dir) == []


async def test_job_speed_cap_still_completes(engine: Engine, source: SourceServer,
                                             download_dir: Path) -> None:
    result = await engine.fetch(spec(source.url("/bytes/50000?seed=l"), download_dir,
                                     max_speed=500_000), Sink())
    assert result.sha256 == source.expected_sha256(50000, "l")


async def _cancel_after_progress(engine: Engine, fetch_spec: FetchSpec, sink: Sink,
                                 at_least: int) -> None:
    task = asyncio.create_task(engine.fetch(fetch_spec, sink))
    for _ in range(1000):  # bounded: 10 s at most
        if sink.updates and sink.updates[-1][0] >= at_least:
            break
        await asyncio.sleep(0.01)
    else:
        task.cancel()
        raise AssertionError("no progress within 10 s")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("connections", [1, 4])
async def test_cancelled_attempt_resumes_exactly(engine: Engine, source: SourceServer,
                                                 download_dir: Path, connections: int) -> None:
    # A cancelled attempt (pause, worker shutdown) keeps .part and sidecar; whatever
    # the sidecar claims must be on disk, so the resumed file hashes right.
    size = 600_000
    url = source.url(f"/bytes/{size}?seed=k&rate=2000000")
    sink = Sink()
    await _cancel_after_progress(engine, spec(url, download_dir, connections=connections),
                                 sink, 150_000)
    name = sink.names[0][0]
    assert (download_dir / f"{name}.part").exists()
    assert (download_dir / f"{name}.part.json").exists()
    result = await engine.fetch(spec(url.replace("rate=2000000", "rate=0"), download_dir,
                                     filename=name, connections=connections), Sink())
    assert result.sha256 == source.expected_sha256(size, "k")
    assert source.ranged_requests()


# ---------------------------------------------------------------- resume without a validator

def _first_byte(request_range: str | None) -> int:
    assert request_range is not None
    return int(request_range.split("=")[1].split("-")[0])


async def test_resume_without_validator_repeats_and_checks_the_overlap(
        engine: Engine, source: SourceServer, download_dir: Path) -> None:
    url = source.url("/bytes/400000?seed=nv&validators=0&drop=1&drop_at=150000")
    sink = Sink()
    with pytest.raises(NetworkError):
        await engine.fetch(spec(url, download_dir), sink)
    name = sink.names[0][0]
    side = json.loads((download_dir / f"{name}.part.json").read_text())
    assert side["validator"] == {} and side["done"] == 150000
    again = Sink()
    result = await engine.fetch(spec(url, download_dir, filename=name), again)
    assert result.sha256 == source.expected_sha256(400000, "nv")
    ranged = source.ranged_requests("/bytes/400000")
    assert [r.range for r in ranged] == [f"bytes={150000 - 65536}-"]
    assert "if-range" not in ranged[0].headers
    assert again.notes == []


@pytest.mark.parametrize("grow", [0, 1000])
async def test_changed_source_without_validator_restarts_never_splices(
        engine: Engine, source: SourceServer, download_dir: Path, grow: int) -> None:
    url = source.url(f"/bytes/300000?seed=ch&key=ch{grow}&validators=0&grow={grow}"
                     "&drop=1&drop_at=120000")
    sink = Sink()
    with pytest.raises(NetworkError):
        await engine.fetch(spec(url, download_dir), sink)
    source.change(f"ch{grow}")  # same length (grow=0) or longer, nothing to tell it by
    again = Sink()
    result = await engine.fetch(spec(url, download_dir, filename=sink.names[0][0]), again)
    assert result.sha256 == source.expected_sha256(300000 + grow, "ch", version=1)
    assert sha_of(download_dir / result.filename) == result.sha256
    assert again.notes == ["source changed; restarted"]
    assert _first_byte(source.ranged_requests()[0].range) < 120000
    assert source.requests[-1].range is None  # then the whole new file


async def test_whole_file_on_disk_without_validator_completes_after_the_check(
        engine: Engine, source: SourceServer, download_dir: Path) -> None:
    name = "whole.bin"
    (download_dir / f"{name}.part").write_bytes(source.content(100000, "w"))
    (download_dir / f"{name}.part.json").write_text(json.dumps(
        {"validator": {}, "total": 100000, "done": 100000, "segments": None}))
    sink = Sink()
    result = await engine.fetch(spec(source.url("/bytes/100000?seed=w&validators=0"),
                                     download_dir, filename=name), sink)
    assert result.sha256 == source.expected_sha256(100000, "w") and sink.notes == []
    assert [r.range for r in source.requests] == [f"bytes={100000 - 65536}-"]


async def test_after_a_reboot_the_resume_point_is_what_the_sidecar_says_is_synced(
        engine: Engine, source: SourceServer, download_dir: Path) -> None:
    # Bytes past the recorded offset (written, not yet synced when the power went)
    # are never trusted: the resume starts from the record, overlap before it.
    name = "torn.bin"
    good = source.content(200000, "t")[:80000]
    (download_dir / f"{name}.part").write_bytes(good + b"\0" * 40000)
    (download_dir / f"{name}.part.json").write_text(json.dumps(
        {"validator": {}, "total": 200000, "done": 80000, "boot": "an earlier boot",
         "segments": None}))
    result = await engine.fetch(spec(source.url("/bytes/200000?seed=t&validators=0"),
                                     download_dir, filename=name), Sink())
    assert result.sha256 == source.expected_sha256(200000, "t")
    assert [r.range for r in source.requests] == [f"bytes={80000 - 65536}-"]


async def test_without_a_reboot_every_written_byte_is_resumed(
        engine: Engine, source: SourceServer, download_dir: Path) -> None:
    # A killed worker loses nothing the kernel accepted: the .part's size counts.
    name = "killed.bin"
    (download_dir / f"{name}.part").write_bytes(source.content(200000, "kb")[:120000])
    (download_dir / f"{name}.part.json").write_text(json.dumps(
        {"validator": {}, "total": 200000, "done": 80000, "boot": boot_id(),
         "segments": None}))
    result = await engine.fetch(spec(source.url("/bytes/200000?seed=kb&validators=0"),
                                     download_dir, filename=name), Sink())
    assert result.sha256 == source.expected_sha256(200000, "kb")
    assert [r.range for r in source.requests] == [f"bytes={120000 - 65536}-"]


async def test_segmented_without_validator_checks_each_segment_overlap(
        engine: Engine, source: SourceServer, download_dir: Path) -> None:
    size = 800_000
    url = source.url(f"/bytes/{size}?seed=sv&key=sv&validators=0&rate=1000000")
    sink = Sink()
    await _cancel_after_progress(engine, spec(url, download_dir, connections=4), sink, 500_000)
    name = sink.names[0][0]
    side = json.loads((download_dir / f"{name}.part.json").read_text())
    assert side["validator"] == {} and len(side["segments"]) >= 4
    # segments that started mid-file and got bytes keep the digest of those they repeated
    checked = sorted(offset + length for offset, length, _digest in side["checks"])
    assert checked == sorted(s for s, _e, d in side["segments"] if s > 0 and d > s)
    seen = len(source.requests)
    result = await engine.fetch(spec(url.replace("rate=1000000", "rate=0"), download_dir,
                                     filename=name, connections=4), Sink())
    assert result.sha256 == source.expected_sha256(size, "sv")
    asked = {_first_byte(r.range) for r in source.requests[seen:]}
    resumed = {d - min(65536, d) for _s, end, d in side["segments"] if d < end}
    assert resumed and resumed <= asked  # each from before its own offset


async def test_segmented_without_validator_changed_between_attempts_restarts(
        engine: Engine, source: SourceServer, download_dir: Path) -> None:
    size = 800_000
    url = source.url(f"/bytes/{size}?seed=sc&key=sc&validators=0&drop=1&drop_at=100000")
    sink = Sink()
    with pytest.raises(NetworkError):
        await engine.fetch(spec(url, download_dir, connections=4), sink)
    source.change("sc")
    again = Sink()
    result = await engine.fetch(spec(url, download_dir, filename=sink.names[0][0],
                                     connections=4), again)
    assert result.sha256 == source.expected_sha256(size, "sc", version=1)
    assert again.notes[:1] == ["source changed; restarted"]


async def test_segmented_without_validator_never_mixes_versions(
        engine: Engine, source: SourceServer, download_dir: Path) -> None:
    # Every request sees another version of the same length: each connection's
    # repeated bytes differ from its neighbour's, so no attempt may finish.
    url = source.url("/bytes/800000?seed=mx&validators=0&change_every=1")
    sink = Sink()
    with pytest.raises(NetworkError, match="kept changing"):
        await engine.fetch(spec(url, download_dir, connections=4), sink)
    assert sink.notes and set(sink.notes) == {"source changed; restarted"}
    assert not (download_dir / sink.names[0][0]).exists()
