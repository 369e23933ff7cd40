"""Which addresses may be connected to: refused IP ranges, numeric host spellings (docs/api.md §5).

:func:`address_blocked` / :func:`check_address` decide whether an IP address may be
connected to; :func:`literal_host_address` understands every numeric spelling a
resolver would accept (``2130706433``, ``0x7f.1``, ``017700000001``), and
:func:`resolve_and_check` resolves a name and keeps only allowed addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

from bgdownload.config import IPNetwork, Settings
from bgdownload.engine.urls import url_host_port
from bgdownload.errors import BlockedDestination

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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
# The documentation ranges (RFC 5737, RFC 3849) are none of the ranges docs/api.md §5 names
# (loopback, private, link-local, multicast, reserved, unspecified), and some networks
# put real gateways there — package mirrors on our own build machines answer from
# 203.0.113.0/24 — so they are not refused although ``ipaddress`` calls them private.
_DOCUMENTATION: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)


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
