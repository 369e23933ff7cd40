"""bgdownload: background downloads with live progress (docs/api.md §10).

    import bgdownload as bgd

    job = bgd.download("https://example.org/big.iso")   # returns at once
    job.wait()                                          # progress; raises bgd.DownloadFailed
    bgd.attach(job.id)                                  # from any later process

Every name here is loaded on first use (PEP 562), so ``import bgdownload.errors``
— in a worker, the API server or the Jupyter server — does not load the client
with httpx, rich and ipywidgets.
"""

import importlib
import importlib.metadata
import typing

if typing.TYPE_CHECKING:
    from bgdownload.client import AsyncClient, Client, Job, active, attach, download, jobs
    from bgdownload.errors import BgdownloadError, DownloadFailed

    __version__: str

__all__ = [
    "AsyncClient",
    "BgdownloadError",
    "Client",
    "DownloadFailed",
    "Job",
    "__version__",
    "active",
    "attach",
    "download",
    "jobs",
]

#: the module each public name comes from
_HOMES = {
    "AsyncClient": "bgdownload.client",
    "BgdownloadError": "bgdownload.errors",
    "Client": "bgdownload.client",
    "DownloadFailed": "bgdownload.errors",
    "Job": "bgdownload.client",
    "active": "bgdownload.client",
    "attach": "bgdownload.client",
    "download": "bgdownload.client",
    "jobs": "bgdownload.client",
}


def _version() -> str:
    try:
        return importlib.metadata.version("bgdownload")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def __getattr__(name: str) -> typing.Any:
    if name == "__version__":
        value: typing.Any = _version()
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    else:
        # ``bgdownload.errors`` after a bare ``import bgdownload``, as when it was eager
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
