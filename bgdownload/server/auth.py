"""Bearer tokens → owner (docs/api.md §4).

With no tokens configured the server is single-user and every request is
owner ``local``. Otherwise ``Authorization: Bearer <token>`` names the owner;
``?access_token=`` is accepted only where a browser cannot set headers: GET
requests of event streams (routes marked with :func:`query_token_allowed`)
and WebSocket upgrades.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from quart import current_app, g, request, websocket

from bgdownload.errors import Unauthorized
from bgdownload.web import LOCAL_OWNER

_QUERY_TOKEN_ATTR = "_bgdownload_query_token"

F = TypeVar("F", bound=Callable[..., Any])


def query_token_allowed(view: F) -> F:
    """Mark a GET event-stream view as accepting ``?access_token=``."""
    setattr(view, _QUERY_TOKEN_ATTR, True)
    return view


class TokenAuth:
    """Resolves a presented token to its owner in constant time per token."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        # bytes once, so each request compares without re-encoding every token
        self._tokens = [(t.encode(), owner) for t, owner in tokens.items()]

    @property
    def single_user(self) -> bool:
        return not self._tokens

    def owner_for(self, token: str | None) -> str:
        """The owner of ``token``; :class:`Unauthorized` when it is missing or unknown."""
        if self.single_user:
            return LOCAL_OWNER
        if not token:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        presented = token.encode()
        found: str | None = None
        # every configured token is compared, so timing does not tell which prefix matched
        for candidate, owner in self._tokens:
            if hmac.compare_digest(candidate, presented):
                found = owner
        if found is None:
            raise Unauthorized("invalid bearer token")
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _auth() -> TokenAuth:
    auth: TokenAuth = current_app.extensions["bgdownload.auth"]
    return auth


async def authenticate_request() -> None:
    """``before_request`` hook of the API blueprints: sets ``g.owner`` or raises 401."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None and request.method == "GET":
        view = current_app.view_functions.get(request.endpoint or "")
        if view is not None and getattr(view, _QUERY_TOKEN_ATTR, False):
            token = request.args.get("access_token") or None
    g.owner = _auth().owner_for(token)


async def authenticate_websocket() -> None:
    """``before_websocket`` hook: header or ``?access_token=`` (browsers cannot set headers)."""
    token = bearer_token(websocket.headers.get("Authorization"))
    if token is None:
        token = websocket.args.get("access_token") or None
    g.owner = _auth().owner_for(token)


def current_owner() -> str:
    """The owner resolved for this request or WebSocket."""
    owner: str = g.owner
    return owner
