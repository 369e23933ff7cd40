"""bgdownload as a Jupyter server extension.

``{base_url}bgdownload/api/v1/...`` serves docs/api.md §2 to §3 over
:class:`bgdownload.service.Service` with Jupyter's own authentication, and
``{base_url}bgdownload/`` the Active Downloads page. Enabled by the
``jupyter_server_config.d/bgdownload_jupyter.json`` the package installs.
"""

from __future__ import annotations

from typing import Any

from bgdownload_jupyter.app import BgdownloadJupyterApp


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "bgdownload_jupyter", "app": BgdownloadJupyterApp}]


def _load_jupyter_server_extension(serverapp: Any) -> BgdownloadJupyterApp:
    """Load by hand (what Jupyter does through the extension point's app)."""
    app: BgdownloadJupyterApp = BgdownloadJupyterApp._load_jupyter_server_extension(  # type: ignore[no-untyped-call]
        serverapp
    )
    return app


__all__ = ["BgdownloadJupyterApp"]
