"""The Python client of API.md §10: sync and async clients, jobs, widgets, terminal bars.

Layout: ``protocol`` (requests, responses, errors — no I/O), ``sse`` (event
streams), ``aio`` (the I/O), ``sync`` (the same, blocking), ``job`` (job
objects), ``journal`` (ids created here), ``default`` (the module-level API),
``widgets`` / ``terminal`` / ``text`` (showing progress).
"""

from bgdownload.client.aio import AsyncClient
from bgdownload.client.default import active, attach, default_client, download, jobs
from bgdownload.client.job import AsyncJob, Job
from bgdownload.client.journal import Journal
from bgdownload.client.protocol import ErrorInfo, JobInfo
from bgdownload.client.sync import Client

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "ErrorInfo",
    "Job",
    "JobInfo",
    "Journal",
    "active",
    "attach",
    "default_client",
    "download",
    "jobs",
]
