"""Pure parts of the web layer: keep-alive pacing, token auth, bind checks, seed shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bgdownload.config import Settings
from bgdownload.errors import ConfigError, Unauthorized
from bgdownload.models import Event, Progress
from bgdownload.server.auth import TokenAuth, bearer_token
from bgdownload.server.compat import fold_event, seed_message, seed_progress
from bgdownload.server.serve import bind_address, check_bind, is_loopback
from bgdownload.web import LOCAL_OWNER
from bgdownload.web.streams import with_keepalive

# -- with_keepalive --


async def test_keepalive_yields_none_while_the_source_is_silent_and_then_its_items() -> None:
    release = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        await release.wait()
        yield 1
        yield 2

    paced = with_keepalive(source(), interval=0.01)
    assert await anext(paced) is None
    assert await anext(paced) is None
    release.set()
    items = [item async for item in paced if item is not None]
    assert items == [1, 2]


async def test_closing_keepalive_closes_the_source_while_it_waits() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            await asyncio.Event().wait()  # never yields
            yield 0
        finally:
            closed.set()

    paced = with_keepalive(source(), interval=0.01)
    assert await anext(paced) is None
    await paced.aclose()
    assert closed.is_set()


async def test_keepalive_passes_source_errors_on() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1
        raise LookupError("gone")

    paced = with_keepalive(source(), interval=5)
    assert await anext(paced) == 1
    with pytest.raises(LookupError):
        await anext(paced)


# -- auth --


def test_single_user_is_local_whatever_is_sent() -> None:
    auth = TokenAuth({})
    assert auth.owner_for(None) == LOCAL_OWNER
    assert auth.owner_for("anything") == LOCAL_OWNER


def test_tokens_map_to_their_owner_and_others_are_refused() -> None:
    auth = TokenAuth({"ta": "alice", "tb": "bob"})
    assert auth.owner_for("ta") == "alice"
    assert auth.owner_for("tb") == "bob"
    for bad in (None, "", "t", "ta ", "TA", "tatb"):
        with pytest.raises(Unauthorized):
            auth.owner_for(bad)


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
    ("", None), (None, None),
])
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


# -- serve --


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org", "10.0.0.1"])
def test_single_user_refuses_non_loopback_unless_insecure(host: str) -> None:
    single = Settings()
    with pytest.raises(ConfigError, match="--insecure"):
        check_bind(single, host, insecure=False)
    check_bind(single, host, insecure=True)
    check_bind(Settings(tokens={"t": "alice"}), host, insecure=False)


def test_bind_address_brackets_ipv6() -> None:
    assert bind_address("::1", 80) == "[::1]:80"
    assert bind_address("127.0.0.1", 80) == "127.0.0.1:80"


# -- seed shapes (docs/api.md §7) --


def test_seed_progress_uses_zero_for_unknown_total_and_integer_percent() -> None:
    assert seed_progress(Progress(loaded=5, total=None, speed=1.6)) == {
        "loaded": 5, "total": 0, "percent": 0, "speed": 2}
    assert seed_progress(Progress(loaded=9999, total=10000, speed=0))["percent"] == 99


def test_seed_messages_for_each_kind_of_event() -> None:
    progress = Event("1-0", "progress", {"id": "j", "state": "active", "loaded": 50,
                                         "total": 200, "percent": 25.0, "speed": 10, "eta": 15})
    assert seed_message(progress) == {"loaded": 50, "total": 200, "percent": 25, "speed": 10}
    done = Event("2-0", "state", {"id": "j", "state": "completed",
                                  "progress": {"loaded": 200, "total": 200}})
    assert seed_message(done) == {"state": "completed", "percent": 100}
    failed = Event("3-0", "state", {"id": "j", "state": "failed", "error": {"code": "http_error",
                                    "message": "source answered HTTP 404"},
                                    "progress": {"loaded": 0, "total": None}})
    assert seed_message(failed)["state"] == "failed"
    assert seed_message(failed)["error"]["code"] == "http_error"


def test_fold_event_applies_progress_to_the_files_of_a_batch() -> None:
    job = {"id": "j", "state": "active", "progress": {"loaded": 0, "total": 20},
           "files": [{"url": "u1", "state": "active", "progress": {}},
                     {"url": "u2", "state": "waiting", "progress": {}}]}
    event = Event("5-0", "progress", {"id": "j", "state": "active", "loaded": 15, "total": 20,
                                      "percent": 75.0, "speed": 3, "eta": 1.7, "files": [
                                          {"state": "completed", "loaded": 10, "total": 10},
                                          {"state": "active", "loaded": 5, "total": 10}]})
    folded = fold_event(job, event)
    assert folded["progress"]["loaded"] == 15
    assert [f["state"] for f in folded["files"]] == ["completed", "active"]
    assert folded["files"][0]["url"] == "u1"
    assert job["progress"]["loaded"] == 0  # the input is not changed
