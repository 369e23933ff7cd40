"""The background event loop that every blocking client and job of the process runs on.

A blocking call made on a thread whose loop is running — a notebook cell
calling ``job.wait()`` inside ipykernel's loop — neither deadlocks nor needs
nest_asyncio, because the coroutine runs on this loop's own thread; notebook
widgets keep moving because their event streams run here too, not on the
kernel's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an event loop, shared by every sync client of the process."""

    _instance: LoopThread | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="bgdownload-client", daemon=True
        )
        self.thread.start()

    @classmethod
    def shared(cls) -> LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it is done."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a blocking bgdownload.Client call was made from the client's own event loop; "
                "use AsyncClient in async code"
            )
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            # Ctrl-C (or a notebook interrupt) must not leave the call running; wait for
            # the cancellation to land so async generators close on their own loop
            future.cancel()
            concurrent.futures.wait([future], timeout=5)
            raise

    def iterate(self, stream: AsyncGenerator[T, None]) -> Iterator[T]:
        """A blocking iterator over an async generator that lives on the loop thread."""
        try:
            while True:
                try:
                    yield self.run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self.run(stream.aclose())
