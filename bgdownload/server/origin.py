"""Host and Origin checks on every request (docs/api.md §17): no DNS rebinding, no drive-by writes.

A page on any web site can make the visitor's browser send requests to a
server on loopback. Two things stop it here, before authentication runs:

- **Host**: a DNS-rebinding page reaches this server under the attacker's
  name (``Host: attacker.example``), so only the names this server serves are
  answered: loopback names and the address the connection came to (at this
  server's port), the host it was started with, and ``BGDOWNLOAD_ALLOWED_HOSTS``.
  Anything else is ``400 invalid_request``.
- **Origin**: a form or ``fetch`` from another origin may send a request but
  not read the answer, so what it could do is change state. POST, PUT, PATCH
  and DELETE with an ``Origin`` other than this server's own, or with
  ``Sec-Fetch-Site: cross-site``/``same-site``, are ``403 forbidden``; so are
  WebSocket upgrades (which the same-origin policy does not cover at all)
  from another origin or ``Origin: null``. Requests with neither header come
  from programs (curl, the Python client) and pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from quart import Quart, request, websocket

from bgdownload.errors import InvalidRequest, RequestError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: what a browser says of a request made by a page of another origin (another port included)
FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
#: addresses a server listens on that are no name anyone connects to
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

HostPort = tuple[str, int | None]


class Forbidden(RequestError):
    """A browser request from another origin: ``403 forbidden`` (docs/api.md §17)."""

    code = "forbidden"
    status = 403


def split_host(value: str | None) -> HostPort | None:
    """``"Example.org:80"`` → ``("example.org", 80)``, ``"[::1]:8765"`` → ``("::1", 8765)``;
    None when ``value`` is missing or not a plain ``host[:port]``."""
    if not value or any(c in value for c in "/?#@\\ \t") or not value.isascii():
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    name = (parts.hostname or "").rstrip(".")
    return (name, port) if name else None


def _loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostPolicy:
    """Which ``Host`` values a server answers to."""

    #: names served at this server's own port: the host it was started with
    names: frozenset[str]
    #: ``BGDOWNLOAD_ALLOWED_HOSTS``: a name with no port matches every port
    allowed: frozenset[HostPort]
    any_host: bool = False

    @classmethod
    def build(cls, bind_host: str | None, allowed_hosts: Iterable[str]) -> HostPolicy:
        names: set[str] = set()
        host = (bind_host or "").strip()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 address, as --host takes it
        bound = split_host(host)
        if bound and bound[0] not in WILDCARD_HOSTS:
            names.add(bound[0])
        allowed = {hp for entry in allowed_hosts if entry != "*"
                   and (hp := split_host(entry)) is not None}
        return cls(frozenset(names), frozenset(allowed), "*" in allowed_hosts)

    def allows(self, host: str | None, local: tuple[str, int | None] | None, scheme: str) -> bool:
        """Whether ``host`` (the header) names this server; ``local`` is the address the
        connection came to (None when unknown, as in Quart's test client)."""
        parsed = split_host(host)
        if parsed is None:
            return False
        name, port = parsed
        if self.any_host or parsed in self.allowed or (name, None) in self.allowed:
            return True
        local_name = str(local[0]).lower() if local else None
        if not (_loopback(name) or name in self.names or name == local_name):
            return False
        local_port = local[1] if local else None
        return local_port is None or (port or DEFAULT_PORTS.get(scheme)) == local_port


def same_origin(origin: str, host: str | None) -> bool:
    """Whether the ``Origin`` header names the server the request was sent to (its ``Host``)."""
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    default = DEFAULT_PORTS.get(parts.scheme)
    target = split_host(host)
    if default is None or not parts.hostname or target is None:
        return False
    return (parts.hostname.rstrip("."), origin_port or default) == (target[0], target[1] or default)


def origin_refusal(origin: str | None, fetch_site: str | None, host: str | None,
                   *, upgrade: bool = False) -> str | None:
    """Why a request from a browser page of another origin is refused; None when it may pass.

    The arguments are the request's ``Origin``, ``Sec-Fetch-Site`` and ``Host``
    headers; ``upgrade`` says it is a WebSocket handshake (for the message).
    """
    site = (fetch_site or "").strip().lower()
    if site in FOREIGN_FETCH_SITES:
        return f"refused: a page of another site sent this request (Sec-Fetch-Site: {site})"
    if origin is None or same_origin(origin.strip(), host):
        return None
    what = "WebSocket" if upgrade else "state-changing request"
    return f"refused: cross-origin {what} from {_shown(origin)}"


def _shown(value: str) -> str:
    """A caller's header value fit for a message: short, printable ASCII."""
    text = value[:100].encode("ascii", "backslashreplace").decode()
    return repr("".join(c if c.isprintable() else "?" for c in text))


def host_refusal(policy: HostPolicy, host: str | None, local: tuple[str, int | None] | None,
                 scheme: str) -> InvalidRequest | None:
    if policy.allows(host, local, scheme):
        return None
    if not host:
        return InvalidRequest("the request has no Host header")
    return InvalidRequest(
        f"Host {_shown(host)} is not a name this server answers to "
        "(add it to BGDOWNLOAD_ALLOWED_HOSTS if it should be)"
    )


def install_origin_checks(app: Quart, policy: HostPolicy) -> None:
    """Check Host on every request and upgrade, Origin on state-changing ones and upgrades.

    Registered before every other hook, so nothing else runs for a refused request.
    """

    @app.before_request
    async def check_request() -> None:
        refused = host_refusal(policy, request.headers.get("Host"), request.server,
                               request.scheme)
        if refused is not None:
            raise refused
        if request.method in STATE_CHANGING:
            headers = request.headers
            reason = origin_refusal(headers.get("Origin"), headers.get("Sec-Fetch-Site"),
                                    headers.get("Host"))
            if reason is not None:
                raise Forbidden(reason)

    @app.before_websocket
    async def check_websocket() -> None:
        refused = host_refusal(policy, websocket.headers.get("Host"), websocket.server,
                               websocket.scheme)
        if refused is not None:
            raise refused
        headers = websocket.headers
        reason = origin_refusal(headers.get("Origin"), headers.get("Sec-Fetch-Site"),
                                headers.get("Host"), upgrade=True)
        if reason is not None:
            raise Forbidden(reason)
