"""Which URLs may be downloaded at all: absolute http(s), a host, no userinfo (docs/api.md §5)."""

from __future__ import annotations

from urllib.parse import urlsplit

from bgdownload.errors import InvalidURL

_MAX_URL_LENGTH = 8192


def validate_url(url: str) -> str:
    """Check that ``url`` is an absolute http(s) URL with a host and no userinfo.

    Returns the URL stripped of surrounding whitespace; raises :class:`InvalidURL`.

    >>> validate_url("https://example.org/a.iso")
    'https://example.org/a.iso'
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL("url must be a non-empty string")
    url = url.strip()
    if len(url) > _MAX_URL_LENGTH:
        raise InvalidURL(f"url is longer than {_MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidURL("url contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"url is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidURL(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    if "@" in parts.netloc:
        raise InvalidURL("credentials in the URL are not allowed; pass them in headers")
    if not parts.hostname:
        raise InvalidURL("url has no host")
    if port == 0:
        raise InvalidURL("url has port 0")
    return url


def url_host_port(url: str) -> tuple[str, int]:
    """``(host, port)`` of an already validated URL; IPv6 hosts without brackets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return host, port
