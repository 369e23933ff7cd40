"""Where a download's file name comes from: the caller's wish, Content-Disposition, the URL.

Whatever the source, the name ends up sanitised
(:func:`bgdownload.storage.names.sanitize_filename`, docs/api.md §5).
"""

from __future__ import annotations

import codecs
import re
from urllib.parse import unquote, urlsplit

from bgdownload.storage.names import FALLBACK_NAME, sanitize_filename

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"\s*;\s*({_TOKEN})\s*=\s*({_QUOTED}|[^;]*)", re.DOTALL)


def filename_from_content_disposition(header: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` header (RFC 6266), unsanitised.

    ``filename*`` (RFC 8187, e.g. ``UTF-8''na%C3%AFve.txt``) wins over ``filename``.

    >>> filename_from_content_disposition("attachment; filename*=UTF-8''%E2%82%AC.txt")
    '€.txt'
    """
    if not header:
        return None
    _kind, _, rest = header.partition(";")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(";" + rest):
        key, value = m.group(1).lower(), m.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(key, value)
    extended = params.get("filename*")
    if extended:
        charset, sep, tail = extended.partition("'")
        if sep:
            _lang, sep2, encoded = tail.partition("'")
            if sep2:
                try:
                    codecs.lookup(charset or "utf-8")  # unquote only looks it up for %XX
                    return unquote(encoded, encoding=charset or "utf-8", errors="strict")
                except (LookupError, UnicodeDecodeError):
                    pass
    plain = params.get("filename")
    return plain or None


def filename_from_url(url: str) -> str | None:
    """The last path segment of ``url``, percent-decoded, or None."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    segment = path.rstrip("/").rpartition("/")[2]
    return unquote(segment) or None


def choose_filename(wished: str | None, content_disposition: str | None, url: str) -> str:
    """Sanitised name from the caller's wish, else Content-Disposition, else the URL."""
    for candidate in (wished, filename_from_content_disposition(content_disposition),
                      filename_from_url(url)):
        if candidate:
            cleaned = sanitize_filename(candidate, fallback="")
            if cleaned:
                return cleaned
    return FALLBACK_NAME
