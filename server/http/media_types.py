"""Server layer: the media types of /graphql and the status codes that go with them.

Requests are `application/json`. Responses are `application/json` (every executed operation
answered 200, the long-standing convention), or `application/graphql-response+json` when the
client's `Accept` asks for it, with the GraphQL-over-HTTP status rules: a request error (the
document does not parse or validate, the variables do not fit: no `data` at all) is 400; an
operation that ran is 200, even with field errors. Either way an outage is 503.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from starlette.types import Scope
from strawberry.types import ExecutionResult

JSON: Final = "application/json"
GRAPHQL_RESPONSE: Final = "application/graphql-response+json"
# Wildcards a client may send; they accept the long-standing `application/json`.
_JSON_ALIASES: Final = frozenset({JSON, "application/*", "*/*"})


class Outcome(Enum):
    RAN = "ran"  # the operation executed (perhaps with field errors)
    REQUEST_ERROR = "request error"  # refused before execution: no `data`
    UNAVAILABLE = "unavailable"  # every error is an outage


def parameters(header: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; k=v` -> ("type/subtype", {"k": "v"}), lower-cased."""
    media, *rest = header.split(";")
    params = {}
    for item in rest:
        key, _, value = item.partition("=")
        params[key.strip().lower()] = value.strip().strip('"').lower()
    return media.strip().lower(), params


def with_lowercase_media_type(scope: Scope) -> Scope:
    """The request with its `Content-Type` media type in lower case, as every later reader
    (Strawberry's included) compares it: media types are case-insensitive."""
    headers = [
        (name, _lower_media_type(value) if name == b"content-type" else value)
        for name, value in scope.get("headers", ())
    ]
    return {**scope, "headers": headers}


def _lower_media_type(value: bytes) -> bytes:
    media, separator, rest = value.partition(b";")
    return media.lower() + separator + rest


def is_json_body(content_type: str) -> bool:
    """Only `application/json` (in UTF-8, the only charset JSON allows on the wire)."""
    media, params = parameters(content_type)
    return media == JSON and params.get("charset", "utf-8") == "utf-8"


def negotiate(accept: str | None) -> str | None:
    """The response media type for an `Accept` header, or None when nothing fits (406).

    No header means `application/json`. Among acceptable types the highest `q` wins; on a tie
    the GraphQL response type wins, since a client names it only when it understands it.
    """
    if accept is None or not accept.strip():
        return JSON
    best: tuple[float, bool, str] | None = None
    for item in accept.split(","):
        media, params = parameters(item)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            continue
        if quality <= 0:
            continue
        if media == GRAPHQL_RESPONSE:
            candidate = (quality, True, GRAPHQL_RESPONSE)
        elif media in _JSON_ALIASES:
            candidate = (quality, False, JSON)
        else:
            continue
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return None if best is None else best[2]


def outcome_of(result: ExecutionResult, unavailable_code: str) -> Outcome:
    errors = result.errors or []
    if result.data is not None or not errors:
        return Outcome.RAN
    if all((e.extensions or {}).get("code") == unavailable_code for e in errors):
        return Outcome.UNAVAILABLE
    if all(e.path is None for e in errors):
        return Outcome.REQUEST_ERROR
    return Outcome.RAN


def status_for(media_type: str, outcome: Outcome) -> int:
    if outcome is Outcome.UNAVAILABLE:
        return 503
    if outcome is Outcome.REQUEST_ERROR and media_type == GRAPHQL_RESPONSE:
        return 400
    return 200


def content_type(media_type: str) -> str:
    return f"{media_type}; charset=utf-8"
