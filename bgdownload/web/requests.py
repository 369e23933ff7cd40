"""Request bodies, query strings and headers → the arguments of a Service call.

Adapters hand over plain values: the body as bytes or a form as a mapping of
first values, the query string as a mapping of every value of each name.
Anything malformed is an :class:`~bgdownload.errors.InvalidRequest` (400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bgdownload.errors import InvalidRequest, PayloadTooLarge
from bgdownload.models import JobState, parse_states
from bgdownload.service import streams, validation
from bgdownload.web.schemas import CreateDownload, DeleteQuery, ListQuery, describe

M = TypeVar("M", bound=BaseModel)

#: a query string: each name with every value it was given, in order
Query = Mapping[str, Sequence[str]]

#: the header that makes a create call replayable (docs/api.md §2)
IDEMPOTENCY_HEADER = "Idempotency-Key"

_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def mimetype(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` → ``application/json``."""
    return (content_type or "").split(";")[0].strip().lower()


def is_form(mimetype: str) -> bool:
    """Whether a body of this type is read as form fields rather than JSON."""
    return mimetype in _FORM_TYPES


def check_body_size(length: int | None, limit: int) -> None:
    """A declared or read body over ``limit`` bytes is a 413 before anything else runs."""
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")


def json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``); malformed JSON is a 400."""
    if not raw.strip():
        return {}
    data = validation.load_json(raw)
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return data


def form_create_body(form: Mapping[str, str]) -> dict[str, Any]:
    """A create request sent as form fields (docs/api.md §2).

    Strings stay strings: the Service reads JSON text in files/headers/metadata
    and integers written as text, exactly as a form sends them.
    """
    unknown = sorted(set(form) - set(CreateDownload.model_fields))
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
    return dict(form)


def json_create_body(mimetype: str, raw: bytes) -> dict[str, Any]:
    """A create request sent as JSON, checked for shape against :class:`CreateDownload`."""
    if mimetype not in ("application/json", "") and not mimetype.endswith("+json"):
        raise InvalidRequest(f"unsupported Content-Type {mimetype!r}: send JSON or a form")
    data = json_object(raw)
    try:
        CreateDownload.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None
    return data


def query_model(model: type[M], query: Query) -> M:
    """The query string as ``model``: a name given once is a string, given more a list."""
    args = {name: values[0] if len(values) == 1 else list(values)
            for name, values in query.items() if values}
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None


def list_arguments(query: Query) -> tuple[set[JobState] | None, int, str | None]:
    """``?state=&limit=&cursor=`` of ``GET /downloads`` → ``(states, limit, cursor)``."""
    args = query_model(ListQuery, query)
    return parse_states(args.state), args.limit, args.cursor


def delete_file(query: Query) -> bool:
    """``?delete_file=true`` of ``DELETE /downloads/{id}``."""
    return query_model(DeleteQuery, query).delete_file


def last_event_id(*candidates: str | None) -> str | None:
    """The first non-blank of ``candidates`` (the ``Last-Event-ID`` header, ``?last_event_id=``).

    SSE prefers the header, which EventSource sets on its reconnects; a
    WebSocket, which cannot set headers from a browser, prefers the query.
    A malformed id is a 400 here, before a stream's ``200`` is sent.
    """
    for value in candidates:
        if value and value.strip():
            return streams.check_event_id(value.strip())
    return None
