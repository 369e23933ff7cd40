"""Reading the status and headers of a response: errors, validators, ranges, sizes."""

from __future__ import annotations

import re

import httpx

from bgdownload.errors import HTTPStatusError
from bgdownload.retry_after import parse_retry_after

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def validator_of(response: httpx.Response) -> dict[str, str]:
    found: dict[str, str] = {}
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):  # weak ETags are not allowed in If-Range
        found["etag"] = etag
    last_modified = response.headers.get("last-modified")
    if last_modified:
        found["last_modified"] = last_modified
    return found


def if_range(validator: dict[str, str]) -> str | None:
    return validator.get("etag") or validator.get("last_modified")


def content_range(response: httpx.Response) -> tuple[int, int, int | None] | None:
    m = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)) + 1, total


def content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def raise_for_status(response: httpx.Response) -> None:
    """Raise :class:`HTTPStatusError` unless the status brings a body to download."""
    if response.status_code >= 400:
        raise HTTPStatusError(
            response.status_code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if response.status_code >= 300 or response.status_code == 204:
        raise HTTPStatusError(response.status_code)
