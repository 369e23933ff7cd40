"""Turning a create request's data into a :class:`~bgdownload.models.Job` (docs/api.md §2, §5).

The one place every surface's input is checked: URL schemes and blocked
destinations, extra headers, file names, digests, integer ranges and the
metadata limit. Form fields arrive as text (JSON text for objects and lists,
digits for integers); JSON bodies as they are. Every refusal is an
:class:`~bgdownload.errors.InvalidRequest` or a 422 from :mod:`bgdownload.engine.safety`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from bgdownload import keys
from bgdownload.config import Settings
from bgdownload.engine import safety
from bgdownload.errors import InvalidRequest
from bgdownload.models import FileEntry, Job

METADATA_LIMIT = 16 * 1024
#: deepest nesting of arrays and objects a request may carry (docs/api.md §17)
MAX_JSON_DEPTH = 64
MAX_BATCH_FILES = 10_000
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
#: RFC 9110 §5.1: a field name is a token
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
#: visible ASCII with inner spaces and tabs: no NUL, VT, CR/LF, obs-text or Unicode
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\t\x20-\x7e]*[\x21-\x7e])?")
MAX_HEADERS = 64
MAX_HEADER_VALUE = 8192
#: framing and hop-by-hop fields (RFC 9110 §7.6.1) and what the engine sets itself
#: (Range/If-Range carry resume; Proxy-* belongs to the worker's proxy, not the caller)
REFUSED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "proxy-connection", "proxy-authorization", "proxy-authenticate",
    "expect", "range", "if-range",
})
#: what ``{file_id}`` may be replaced with: no dots, slashes or escapes to climb the template
_FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def load_json(text: str | bytes, what: str = "the request body") -> Any:
    """Parse JSON text no deeper than :data:`MAX_JSON_DEPTH`; anything else is a 400."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidRequest(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from None
    check_depth(value, what)
    return value


def check_depth(value: Any, what: str = "the request body") -> None:
    """Refuse arrays and objects nested deeper than :data:`MAX_JSON_DEPTH` (walked without
    recursion, so the check itself cannot run out of stack)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        pending.extend((child, depth + 1) for child in children)


async def build_job(owner: str, data: Mapping[str, Any], settings: Settings) -> Job:
    """A new job of ``owner`` from the fields of a create request: one ``url`` or ``files``."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    check_depth(dict(data))
    url = data.get("url")
    files = data.get("files")
    if files in (None, "", []):
        files = None
    if url in (None, "") and files is None:
        raise InvalidRequest("url is required (or files for a batch)")
    if url not in (None, "") and files is not None:
        raise InvalidRequest("give either url or files, not both")
    headers = _headers(data.get("headers"))
    metadata = _json_field(data.get("metadata"), "metadata", dict) or {}
    if len(json.dumps(metadata)) > METADATA_LIMIT:
        raise InvalidRequest("metadata is larger than 16 KiB")
    job = Job(
        id=str(uuid.uuid4()),
        owner=owner,
        url=None,
        priority=_int(data.get("priority"), "priority", -keys.PRIORITY_LIMIT,
                      keys.PRIORITY_LIMIT) or 0,
        max_speed=_int(data.get("max_speed"), "max_speed", 1, None),
        connections=_int(data.get("connections"), "connections", 1, 64),
        metadata=metadata,
        headers=headers,
    )
    if files is not None:
        job.files = await _batch_files(files, settings)
        return job
    if not isinstance(url, str):
        raise InvalidRequest("url must be a string")
    job.url = await check_url(url, settings)
    job.wished_filename = _filename(data.get("filename"))
    job.filename = job.wished_filename
    job.expected_sha256 = _sha256(data.get("sha256"))
    return job


async def _batch_files(value: Any, settings: Settings) -> list[FileEntry]:
    entries = _json_field(value, "files", list)
    if not entries or len(entries) > MAX_BATCH_FILES:
        raise InvalidRequest(f"files must hold 1 to {MAX_BATCH_FILES} entries")
    files = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("url"), str):
            raise InvalidRequest(f"files[{index}] must be an object with a url")
        files.append(
            FileEntry(
                url=await check_url(entry["url"], settings),
                filename=_filename(entry.get("filename")),
                expected_sha256=_sha256(entry.get("sha256")),
            )
        )
    return files


def files_from_ids(template: str | None, file_ids: Any) -> list[dict[str, str]]:
    """The seed demo's ``{"file_ids": [...]}`` → batch entries over the URL template."""
    if not template:
        raise InvalidRequest("this server has no BGDOWNLOAD_FILE_URL_TEMPLATE configured")
    if not isinstance(file_ids, list) or not file_ids:
        raise InvalidRequest("file_ids must be a non-empty list")
    files = []
    if len(file_ids) > MAX_BATCH_FILES:
        raise InvalidRequest(f"file_ids must hold 1 to {MAX_BATCH_FILES} entries")
    for file_id in file_ids:
        plain = isinstance(file_id, int | str) and not isinstance(file_id, bool)
        if not plain or not _FILE_ID.fullmatch(str(file_id)):
            shown = ascii(file_id)[:70]
            raise InvalidRequest(
                f"file id {shown} is not a plain identifier (letters, digits, _ and -, "
                "at most 64)"
            )
        files.append({"url": template.replace("{file_id}", str(file_id))})
    return files


async def check_url(url: str, settings: Settings) -> str:
    """Refuse bad URLs and blocked destinations up front (the worker checks again)."""
    url = safety.validate_url(url)
    host, port = safety.url_host_port(url)
    literal = safety.literal_host_address(host)
    if literal is not None:  # an IP literal needs no resolver: check it as is
        safety.check_address(literal, settings, host=host)
        return url
    # A name that does not resolve now is the worker's to report (network_error).
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(safety.resolve_and_check(host, port, settings), 5.0)
    return url


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a job id as this server writes them (a lower-case UUID)."""
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _json_field(value: Any, name: str, kind: type) -> Any:
    """Form fields carry objects as JSON text; JSON bodies carry them as they are."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and kind is not str:
        value = load_json(value, name)
    if not isinstance(value, kind):
        raise InvalidRequest(f"{name} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def _int(value: Any, name: str, low: int, high: int | None) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(f"{name} must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"{name} must be {bound}")
    return number


def _filename(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest("filename must be a string")
    return safety.sanitize_filename(value)


def _sha256(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise InvalidRequest("sha256 must be 64 hexadecimal characters")
    return value.lower()


def _headers(value: Any) -> dict[str, str]:
    """Caller headers for the source (docs/api.md §17): token names, visible-ASCII values."""
    headers = _json_field(value, "headers", dict) or {}
    if len(headers) > MAX_HEADERS:
        raise InvalidRequest(f"headers: at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, text in headers.items():
        shown = ascii(name)[1:-1][:64]
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidRequest(f"header {shown!r} is not a valid field name")
        lowered = name.lower()
        if lowered in REFUSED_HEADERS:
            raise InvalidRequest(f"header {name} is set by the downloader and cannot be given")
        if lowered in seen:
            raise InvalidRequest(f"header {name} is given twice")
        seen.add(lowered)
        if not isinstance(text, str):
            raise InvalidRequest(f"header {name} must have a string value")
        if len(text) > MAX_HEADER_VALUE or (text and not _HEADER_VALUE.fullmatch(text)):
            raise InvalidRequest(
                f"header {name} must be visible ASCII (no control, line-break or "
                f"non-ASCII characters), at most {MAX_HEADER_VALUE} characters"
            )
    return dict(headers)
