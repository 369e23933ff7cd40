"""The Python client of docs/api.md §10: sync and async clients, jobs, widgets, terminal bars.

Layout, each module importing only those above it: ``options`` (the download
options), ``protocol`` (requests, responses, errors — no I/O), ``sse`` (event
streams), ``journal`` (ids created here), ``loop`` (the background loop),
``discovery`` (where the API is), ``text`` / ``terminal`` / ``widgets`` /
``display`` (showing progress), ``job`` (job objects and the ``JobClient``
protocol they need), ``panel`` (the Active Downloads panel), ``aio`` (the
I/O), ``sync`` (the same, blocking), ``default`` (the module-level API).
"""

from bgdownload.client.aio import AsyncClient
from bgdownload.client.default import active, attach, default_client, download, jobs
from bgdownload.client.job import AsyncJob, Job, JobClient
from bgdownload.client.journal import Journal
from bgdownload.client.options import DownloadOptions
from bgdownload.client.protocol import ErrorInfo, JobInfo
from bgdownload.client.sync import Client

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "DownloadOptions",
    "ErrorInfo",
    "Job",
    "JobClient",
    "JobInfo",
    "Journal",
    "active",
    "attach",
    "default_client",
    "download",
    "jobs",
]
