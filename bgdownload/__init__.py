"""bgdownload: background downloads with live progress (API.md §10).

    import bgdownload as bgd

    job = bgd.download("https://example.org/big.iso")   # returns at once
    job.wait()                                          # progress; raises bgd.DownloadFailed
    bgd.attach(job.id)                                  # from any later process
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from bgdownload.client import AsyncClient, Client, Job, active, attach, download, jobs
from bgdownload.errors import BgdownloadError, DownloadFailed

try:
    __version__ = _version("bgdownload")
except _PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

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
