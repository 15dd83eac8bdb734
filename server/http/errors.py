"""Server layer: the GraphQL-shaped answers a request gets before (or instead of) any GraphQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from graphql import GraphQLError
from starlette.responses import JSONResponse
from starlette.types import Message, Receive

from graphql_engine.error_policy import SERVICE_UNAVAILABLE
from server.http.outages import is_outage
from server.http.rate_limit import retry_after

log = logging.getLogger(__name__)

RATE_LIMITED = "RATE_LIMITED"
DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"
# What a client is told to wait when the database is down.
OUTAGE_RETRY_SECONDS = 5


def error_response(
    status: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A GraphQL-shaped request error (no `data`: the operation never ran)."""
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def unauthenticated(message: str) -> JSONResponse:
    return error_response(401, message, "UNAUTHENTICATED", {"WWW-Authenticate": "Bearer"})


def rate_limited_message(wait: float) -> str:
    return f"Too many requests: try again in {retry_after(wait)} s."


def too_many_requests(wait: float) -> JSONResponse:
    return error_response(
        429, rate_limited_message(wait), RATE_LIMITED, {"Retry-After": retry_after(wait)}
    )


def rate_limited_error(wait: float) -> GraphQLError:
    seconds = int(retry_after(wait))
    return GraphQLError(
        rate_limited_message(wait),
        extensions={"code": RATE_LIMITED, "retryAfterSeconds": seconds},
    )


def utf8_size_over(text: str, limit: int) -> bool:
    if len(text) > limit:  # a character is at least one byte
        return True
    # A character is at most four bytes: only then is counting them needed.
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


def document_too_large(query: object, limit: int) -> GraphQLError | None:
    """The refusal of a document over `limit` UTF-8 bytes, checked before any lexing: the
    token limit does not count comments, whitespace or commas, so only this bounds the time
    a document takes to parse. Anything but a string is left to the usual checks."""
    if not isinstance(query, str) or not utf8_size_over(query, limit):
        return None
    return GraphQLError(
        f"The GraphQL document exceeds {limit} bytes (UTF-8).",
        extensions={"code": DOCUMENT_TOO_LARGE},
    )


class DocumentTooLarge(Exception):
    """An HTTP request's document is over the limit (answered 413, as a body over its own)."""

    def __init__(self, refusal: GraphQLError) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def failure_response(error: Exception) -> JSONResponse:
    """What escaped the GraphQL layer: an outage (503) or a bug (500, with a request id)."""
    if is_outage(error):
        log.warning("service unavailable: %s", type(error).__name__)
        return error_response(
            503,
            "The service is temporarily unavailable; try again shortly.",
            SERVICE_UNAVAILABLE,
            {"Retry-After": str(OUTAGE_RETRY_SECONDS)},
        )
    request_id = uuid.uuid4().hex
    log.error("request %s: unexpected error", request_id, exc_info=error)
    body = {
        "errors": [
            {
                "message": "Unexpected error.",
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
            }
        ]
    }
    return JSONResponse(body, status_code=500)


class BodyTooLarge(Exception):
    pass


def limit_body(receive: Receive, max_bytes: int) -> Receive:
    """`receive`, raising BodyTooLarge once the request body passes `max_bytes`."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge
        return message

    return limited
