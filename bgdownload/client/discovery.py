"""Where the API is: ``BGDOWNLOAD_URL``, else the local stack, started on first use.

In order: ``BGDOWNLOAD_URL`` (with ``BGDOWNLOAD_TOKEN``); the local stack's
runtime file when it runs; else the local stack is started — it outlives this
process, so the next kernel finds it running — and the user is told so once.

The token is ``BGDOWNLOAD_TOKEN`` when set; else, when the API is the local
stack's (found here, or named by ``BGDOWNLOAD_URL`` as Jupyter tells its
kernels), the stack's own token from its state dir (docs/api.md §17).
"""

from __future__ import annotations

import sys

from bgdownload.config import Settings
from bgdownload.errors import ServerUnavailable

_announced = False


def resolve_settings() -> Settings:
    return Settings.from_env()


def resolve_api(settings: Settings) -> tuple[str, str | None]:
    """``(api_url, token)`` for a client made without a URL, starting the local stack if needed."""
    global _announced
    if settings.api_url:
        if settings.token:
            return settings.api_url, settings.token
        from bgdownload.local.token import token_for

        return settings.api_url, token_for(settings, settings.api_url)
    # the local stack is loaded only by clients that need it: most point at a URL
    from bgdownload import local

    info = local.runtime_info(settings)
    if info is None:
        if not _announced:
            _announced = True
            print("Starting the local bgdownload stack…", file=sys.stderr, flush=True)
        info = local.ensure_up(settings)
        if not info or not info.get("api_url"):
            info = local.runtime_info(settings)
    if not info or not info.get("api_url"):
        raise ServerUnavailable(
            "the local bgdownload stack did not come up; see `bgdownload status` for its logs"
        )
    return str(info["api_url"]).rstrip("/"), settings.token or local.read_token(settings)
