"""The Active Downloads panel: a live notebook list of every active download of the caller.

Its rows are job widgets (:mod:`bgdownload.client.widgets`) fed by one stream
of all the caller's events (``GET /api/v1/events``), not by a stream each.
"""

from __future__ import annotations

import asyncio
import html
import logging

from bgdownload import errors
from bgdownload.client import protocol
from bgdownload.client.job import AsyncJob, JobClient
from bgdownload.client.protocol import JobInfo
from bgdownload.client.widgets import JobWidget, require_ipywidgets, show, submit
from bgdownload.models import Event

log = logging.getLogger(__name__)


class ActivePanel:
    """Every live download of the caller, rows added and removed as events arrive.

    Rows come from ``GET /downloads?state=waiting,active,paused``, then from
    ``GET /api/v1/events``: a job seen for the first time gets a row, a job
    that reaches a terminal state shows its outcome for ``linger`` seconds and goes.
    """

    def __init__(
        self, client: JobClient, loop: asyncio.AbstractEventLoop, *, linger: float = 3.0
    ) -> None:
        w = require_ipywidgets()
        self._client = client
        self._loop = loop
        self._linger = linger
        self.rows: dict[str, JobWidget] = {}
        self._empty = w.HTML("<i>No active downloads</i>")
        self._problem = w.HTML()
        self.widget = w.VBox(
            [w.HTML("<b>Active downloads</b>"), self._empty, self._problem]
        )
        self._future = submit(self._run(), loop)

    def __repr__(self) -> str:
        return f"<ActivePanel: {len(self.rows)} downloads>"

    def _ipython_display_(self) -> None:
        show(self.widget)

    def close(self) -> None:
        """Stop following events (the widget stays as it was)."""
        self._future.cancel()

    def _layout(self) -> None:
        rows = [row.widget for row in self.rows.values()]
        self.widget.children = [self.widget.children[0], *(rows or [self._empty]), self._problem]

    def _add(self, job: AsyncJob) -> None:
        if job.id not in self.rows:
            self.rows[job.id] = JobWidget(job, self._loop)
            self._layout()

    def _remove(self, job_id: str) -> None:
        row = self.rows.get(job_id)
        if row is not None and row.job.info.state.terminal:
            del self.rows[job_id]
            self._layout()

    async def _run(self) -> None:
        try:
            for job in reversed(await self._client.jobs(protocol.LIVE_STATES)):
                self._add(job)
            async for event in self._client.events():
                await self._on_event(event)
        except errors.BgdownloadError as exc:
            self._problem.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
        except Exception:
            log.exception("the active downloads panel stopped")
            raise

    async def _on_event(self, event: Event) -> None:
        job_id = event.data.get("id")
        if not isinstance(job_id, str):
            return
        row = self.rows.get(job_id)
        if row is None:
            if event.data.get("state") not in {s.value for s in protocol.LIVE_STATES}:
                return
            if event.event == "snapshot":
                job = AsyncJob(self._client, JobInfo.from_dict(event.data))
            else:
                try:
                    job = await self._client.get(job_id)
                except errors.NotFound:
                    return
            self._add(job)
            return
        row.job.apply(event)
        row.render(row.job.info)
        if row.job.info.state.terminal:
            asyncio.get_running_loop().call_later(self._linger, self._remove, job_id)
