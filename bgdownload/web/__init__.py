"""What every HTTP adapter shares: requests, error responses, health, SSE/WebSocket framing.

The Quart server (:mod:`bgdownload.server`) and the Jupyter extension
(``bgdownload_jupyter``) turn a framework request into a call here and the
result into a framework response; nothing in this package imports a web
framework:

- :mod:`~bgdownload.web.schemas`  the request models (pydantic) and their error text
- :mod:`~bgdownload.web.requests` request bodies, query strings and headers → service arguments
- :mod:`~bgdownload.web.rest`     the REST calls of docs/api.md §2 and health → :class:`Reply`
- :mod:`~bgdownload.web.errors`   any exception → ``(status, body, headers)`` (docs/api.md §6)
- :mod:`~bgdownload.web.streams`  SSE and WebSocket framing, keep-alive pacing (docs/api.md §3)
"""

from pathlib import Path

#: owner of every job in single-user mode, the same on every surface (docs/api.md §4)
LOCAL_OWNER = "local"

#: the Active Downloads page (index.html, app.js, app.css), served by both adapters
STATIC = Path(__file__).parent / "static"

__all__ = ["LOCAL_OWNER", "STATIC"]
