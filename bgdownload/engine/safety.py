"""What may be downloaded, from where, and under which name (API.md §5).

Three concerns, all pure except the last two helpers:

* URLs: :func:`validate_url` (http/https only, a host, no userinfo).
* Destinations: :func:`address_blocked` / :func:`check_address` decide whether an IP
  address may be connected to; :func:`literal_host_address` understands every numeric
  spelling a resolver would accept (``2130706433``, ``0x7f.1``, ``017700000001``), and
  :func:`resolve_and_check` resolves a name and keeps only allowed addresses.
* File names: :func:`sanitize_filename`, :func:`filename_from_content_disposition`,
  :func:`filename_from_url`, :func:`choose_filename` and :func:`reserve_unique_name`,
  which atomically claims ``<name>.part`` so two jobs never pick the same name.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import os
import re
import socket
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bgdownload.config import IPNetwork, Settings
from bgdownload.errors import BlockedDestination, InvalidURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
FALLBACK_NAME = "download"
MAX_NAME_BYTES = 200
_MAX_URL_LENGTH = 8192

# Ranges ``ipaddress`` does not flag as non-global in every Python version.
_EXTRA_BLOCKED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT
    ipaddress.ip_network("192.0.0.0/24"),
    ipaddress.ip_network("198.18.0.0/15"),
    ipaddress.ip_network("240.0.0.0/4"),
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated) and unspecified
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.ip_network("fc00::/7"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fec0::/10"),  # site-local (deprecated)
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# The documentation ranges (RFC 5737, RFC 3849) are none of the ranges API.md §5 names
# (loopback, private, link-local, multicast, reserved, unspecified), and some networks
# put real gateways there — package mirrors on our own build machines answer from
# 203.0.113.0/24 — so they are not refused although ``ipaddress`` calls them private.
_DOCUMENTATION: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)


# --------------------------------------------------------------------------- URLs


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


# --------------------------------------------------------------------------- addresses


def _parse_ipv4_part(text: str) -> int | None:
    if not text:
        return None
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16) if text[2:] else 0
        if len(text) > 1 and text[0] == "0":
            return int(text[1:], 8)
        if text.isdigit():
            return int(text)
    except ValueError:
        return None
    return None


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The ``inet_aton`` reading of ``host`` (what resolvers and browsers accept), or None."""
    parts = host.split(".")
    if len(parts) > 4:
        return None
    numbers = [_parse_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    # All but the last part are single bytes; the last fills the remaining bytes.
    if any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    number = 0
    for v in values[:-1]:
        number = number * 256 + v
    number = (number << (8 * (5 - len(values)))) + values[-1]
    return ipaddress.IPv4Address(number)


def literal_host_address(host: str) -> IPAddress | None:
    """The IP address ``host`` spells, in any numeric form, or None for a DNS name.

    >>> str(literal_host_address("0x7f.1"))
    '127.0.0.1'
    """
    h = host.strip().strip("[]").rstrip(".")
    h = h.split("%", 1)[0]  # drop an IPv6 zone id
    if not h:
        return None
    if ":" in h:
        try:
            return ipaddress.IPv6Address(h)
        except ValueError:
            return None
    return _parse_legacy_ipv4(h)


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)
    if addr in _NAT64:
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def _forms(addr: IPAddress) -> list[IPAddress]:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        # The socket really talks IPv4 to the mapped address: judge that alone.
        return [addr.ipv4_mapped]
    forms: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        forms.extend(_embedded_ipv4(addr))
    return forms


def _is_blocked_range(addr: IPAddress) -> bool:
    if any(addr.version == net.version and addr in net for net in _DOCUMENTATION):
        return False
    return (
        addr.is_loopback
        or addr.is_private
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
        or any(addr.version == net.version and addr in net for net in _EXTRA_BLOCKED)
    )


def _allowed_by(addr: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def address_blocked(addr: IPAddress | str, allow_networks: Iterable[IPNetwork] = ()) -> bool:
    """True when ``addr`` lies in a refused range and no allowed network covers it.

    An IPv6 address carrying an IPv4 address (mapped, 6to4, Teredo, NAT64) is judged
    by both forms, so ``::ffff:127.0.0.1`` is loopback.
    """
    if isinstance(addr, str):
        addr = ipaddress.ip_address(addr.split("%", 1)[0])
    nets = tuple(allow_networks)
    forms = _forms(addr)
    if any(_allowed_by(f, nets) for f in forms):
        return False
    return any(_is_blocked_range(f) for f in forms)


def check_address(addr: IPAddress | str, settings: Settings, *, host: str | None = None) -> None:
    """Raise :class:`BlockedDestination` when ``addr`` may not be connected to."""
    if address_blocked(addr, settings.allow_networks):
        shown = f"{host} ({addr})" if host and host != str(addr) else str(addr)
        raise BlockedDestination(f"destination {shown} is in a blocked address range")


def check_literal_host(url: str, settings: Settings) -> None:
    """Refuse a URL whose host is a blocked IP literal (any numeric spelling).

    DNS names pass here; they are checked when resolved (:func:`resolve_and_check`).
    """
    host, _ = url_host_port(url)
    addr = literal_host_address(host)
    if addr is not None:
        check_address(addr, settings, host=host)


async def resolve_and_check(host: str, port: int, settings: Settings) -> list[IPAddress]:
    """Resolve ``host`` and return the addresses that may be connected to.

    Raises :class:`BlockedDestination` when every address is blocked, and ``OSError``
    (``socket.gaierror``) when the name does not resolve.
    """
    literal = literal_host_address(host)
    if literal is not None:
        check_address(literal, settings, host=host)
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    allowed: list[IPAddress] = []
    blocked: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address_blocked(addr, settings.allow_networks):
            blocked.append(str(addr))
        elif addr not in allowed:
            allowed.append(addr)
    if not allowed:
        raise BlockedDestination(
            f"destination {host} resolves only to blocked addresses ({', '.join(blocked)})"
        )
    return allowed


# --------------------------------------------------------------------------- file names

_UNSAFE_CHARS = re.compile(r'[/\\\x00-\x1f\x7f<>:"|?*]')
_DOT_RUNS = re.compile(r"\.{2,}")
_COMPOUND_EXT = re.compile(r"(\.tar\.(?:gz|bz2|xz|zst|lz|lzma|z))$", re.IGNORECASE)
_MAX_EXT_BYTES = 24


def split_ext(name: str) -> tuple[str, str]:
    """``"a.tar.gz"`` → ``("a", ".tar.gz")``; ``"README"`` → ``("README", "")``."""
    m = _COMPOUND_EXT.search(name)
    if m and m.start() > 0:
        return name[: m.start()], m.group(1)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def sanitize_filename(name: str | None, *, fallback: str = FALLBACK_NAME) -> str:
    """Make ``name`` a safe single path component (API.md §5).

    No path separators, no ``..``, no control or bidi-override characters, no
    leading dot, at most 200 bytes of UTF-8 (the extension is kept). Returns
    ``fallback`` when nothing usable is left.

    >>> sanitize_filename("../../etc/passwd")
    'etc_passwd'
    """
    if not name:
        return fallback
    text = unicodedata.normalize("NFC", str(name))
    # Format characters (Cf) include right-to-left overrides that disguise extensions.
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    text = _UNSAFE_CHARS.sub("_", text)
    text = _DOT_RUNS.sub(".", text)
    text = text.strip().lstrip("._ ").rstrip(". ")
    text = re.sub(r"_{2,}", "_", text)
    if not text or set(text) <= {".", "_"}:
        return fallback
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        stem, ext = split_ext(text)
        if len(ext.encode("utf-8")) > _MAX_EXT_BYTES:
            stem, ext = text, ""
        stem = _truncate_utf8(stem, MAX_NAME_BYTES - len(ext.encode("utf-8"))).rstrip(". ")
        text = (stem + ext) if stem else fallback
    return text


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


def safe_path(root: Path, name: str) -> Path:
    """``root/name``, refusing any name that would land outside ``root``."""
    base = root.resolve()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise InvalidURL(f"unsafe file name {name!r}")
    path = (base / name).resolve()
    if path.parent != base:
        raise InvalidURL(f"file name {name!r} leaves the download root")
    return path


def part_path(root: Path, name: str) -> Path:
    return safe_path(root, name + PART_SUFFIX)


def sidecar_path(root: Path, name: str) -> Path:
    return safe_path(root, name + SIDECAR_SUFFIX)


def reserve_unique_name(root: Path, name: str, *, limit: int = 10_000) -> str:
    """Claim a free name in ``root`` for ``name`` and create its empty ``.part``.

    Picks ``name``, then ``name (1).ext``, ``name (2).ext`` … such that neither the
    final file nor its ``.part`` exists, creating the ``.part`` with ``O_EXCL`` so two
    jobs racing for the same name always end up with different ones.
    """
    name = sanitize_filename(name)
    root.mkdir(parents=True, exist_ok=True)
    stem, ext = split_ext(name)
    for i in range(limit):
        candidate = name if i == 0 else f"{stem} ({i}){ext}"
        final = safe_path(root, candidate)
        if final.exists() or final.is_symlink():
            continue
        try:
            fd = os.open(part_path(root, candidate), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        # Another job may have renamed its finished ``.part`` into place meanwhile.
        if final.exists():
            os.unlink(part_path(root, candidate))
            continue
        return candidate
    raise FileExistsError(f"no free file name for {name!r} in {root}")
