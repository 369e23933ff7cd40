"""Where the app keeps its Service, and the typed accessor the routes use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import current_app

if TYPE_CHECKING:
    from bgdownload.config import Settings
    from bgdownload.service import Service

SERVICE_KEY = "bgdownload.service"
SETTINGS_KEY = "bgdownload.settings"


def service() -> Service:
    """The Service of the running app (connected in ``before_serving``)."""
    svc: Service = current_app.extensions[SERVICE_KEY]
    return svc


def settings() -> Settings:
    value: Settings = current_app.extensions[SETTINGS_KEY]
    return value
