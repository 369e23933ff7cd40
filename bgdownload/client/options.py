"""The keyword options of ``download()``, defined once for every client and the protocol.

``Client.download``, ``AsyncClient.download``, ``bgd.download`` and
``protocol.create_call`` all take ``**options: Unpack[DownloadOptions]``, so a
new option is added here and type-checks everywhere at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict


class DownloadOptions(TypedDict, total=False):
    """What ``download(url, **options)`` accepts besides the URL (docs/api.md §2 create fields)."""

    #: wished file name in the download root; sanitised, made unique on a clash
    filename: str | None
    #: expected SHA-256 (hex); a mismatch fails the job with ``checksum_mismatch``
    sha256: str | None
    #: extra request headers for the source; never echoed back
    headers: Mapping[str, str] | None
    #: a batch job: URLs, or ``{"url", "filename"?, "sha256"?}`` entries
    files: Iterable[Mapping[str, Any] | str] | None
    #: higher runs first among waiting jobs (server default 0)
    priority: int | None
    #: bytes/s cap for this job
    max_speed: int | None
    #: parallel ranged connections for this job (default: the server's)
    connections: int | None
    #: free JSON object kept with the job
    metadata: Mapping[str, Any] | None


def check_options(options: Mapping[str, object]) -> None:
    """Reject an unknown keyword the way a written-out parameter list would."""
    for name in options:
        if name not in DownloadOptions.__annotations__:
            raise TypeError(f"download() got an unexpected keyword argument {name!r}")
