"""The only code that knows taskiq: the at-least-once broker, the runtime, the job runner.

``taskiq worker bgdownload.worker:broker`` is the worker's entry point. The broker
is built from the environment only when ``broker`` or ``download`` is first asked
for, so the API process can import :mod:`bgdownload.worker.sender` (and tests the
runner) without one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bgdownload.worker.delivery import make_broker
    from bgdownload.worker.task import broker, download

__all__ = ["broker", "download", "make_broker"]

_HOMES = {
    "broker": "bgdownload.worker.task",
    "download": "bgdownload.worker.task",
    "make_broker": "bgdownload.worker.delivery",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
