"""Resolver layer: what a client sees of an operation's top-level errors.

Every error carries a stable `extensions.code`:

    GRAPHQL_PARSE_FAILED        the document does not parse
    GRAPHQL_VALIDATION_FAILED   the document does not fit the schema (each limit has its own code,
                                see `resolvers.limits`)
    BAD_USER_INPUT              arguments or variables refused (paging, variable values)
    INTERNAL_SERVER_ERROR       a bug
    SERVICE_UNAVAILABLE         an outage (the database is down); retrying later helps

In production, bugs and outages are masked: the client gets a fixed message and a request id,
and the log gets the same id with the traceback. The client's own mistakes (syntax,
validation, bad input) and the typed errors of the result unions are never masked; "Did you
mean …?" suggestions are removed from them, as they would map out the schema.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Final

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import MaskErrors, SchemaExtension

log = logging.getLogger(__name__)

GRAPHQL_PARSE_FAILED: Final = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED: Final = "GRAPHQL_VALIDATION_FAILED"
BAD_USER_INPUT: Final = "BAD_USER_INPUT"
INTERNAL_SERVER_ERROR: Final = "INTERNAL_SERVER_ERROR"
SERVICE_UNAVAILABLE: Final = "SERVICE_UNAVAILABLE"

UNEXPECTED_MESSAGE: Final = "Unexpected error."
UNAVAILABLE_MESSAGE: Final = "The service is temporarily unavailable; try again shortly."

# graphql-core phrases its suggestions as " Did you mean 'x'?" / "... the enum value 'X'?".
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")

OutagePredicate = Callable[[BaseException], bool]


def never(_: BaseException) -> bool:
    return False


def is_unexpected(error: GraphQLError) -> bool:
    """Mask only what a resolver raised by accident (a bug or an outage), never the client's
    own mistakes.

    Syntax, validation and argument errors arise outside any field (no path), and errors
    raised on purpose for the client (bad paging arguments) are GraphQLErrors themselves.
    """
    original = error.original_error
    return (
        error.path is not None and original is not None and not isinstance(original, GraphQLError)
    )


def without_suggestions(message: str) -> str:
    return _SUGGESTION.sub("", message)


class ErrorCodes(SchemaExtension):
    """Gives every error a code (by the phase it arose in) and, in production, no suggestions."""

    def __init__(self, *, hide_suggestions: bool, is_outage: OutagePredicate = never) -> None:
        self.hide_suggestions = hide_suggestions
        self.is_outage = is_outage
        self._validation_errors: set[int] = set()

    def on_validate(self) -> Iterator[None]:
        yield
        # Identity, not equality: ValidationCache hands back the very same error objects.
        self._validation_errors = {id(e) for e in self.execution_context.pre_execution_errors or ()}

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is None or not errors:
            return
        result.errors = [self.finish(error) for error in errors]

    def finish(self, error: GraphQLError) -> GraphQLError:
        code = (error.extensions or {}).get("code") or self.code_for(error)
        message = error.message
        if self.hide_suggestions:
            message = without_suggestions(message)
        return GraphQLError(
            message,
            error.nodes,
            error.source,
            error.positions,
            error.path,
            error.original_error,
            {**(error.extensions or {}), "code": code},
        )

    def code_for(self, error: GraphQLError) -> str:
        if isinstance(error, GraphQLSyntaxError):
            return GRAPHQL_PARSE_FAILED
        if id(error) in self._validation_errors:
            return GRAPHQL_VALIDATION_FAILED
        if error.path is None:
            # Refused before any field ran: variable values, the operation name or type.
            return BAD_USER_INPUT
        original = error.original_error
        if original is not None and self.is_outage(original):
            return SERVICE_UNAVAILABLE
        return INTERNAL_SERVER_ERROR


class MaskUnexpected(MaskErrors):
    """Strawberry's MaskErrors for bugs and outages, with one request id per operation that
    the client gets in `extensions.requestId` and the log gets with the traceback."""

    def __init__(self, *, is_outage: OutagePredicate = never) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message=UNEXPECTED_MESSAGE)
        self.is_outage = is_outage
        self.request_id: str | None = None

    def _process_result(self, result: object) -> None:
        # Strawberry's checks `result` against a runtime Protocol, which costs more than the
        # rest of a subscription event's masking; any result with errors has them here.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if self.request_id is None:
            self.request_id = uuid.uuid4().hex
        original = error.original_error
        path = ".".join(str(p) for p in error.path or ())
        if original is not None and self.is_outage(original):
            log.warning(
                "request %s: %s failed, service unavailable: %s",
                self.request_id,
                path,
                type(original).__name__,
            )
            message, code = UNAVAILABLE_MESSAGE, SERVICE_UNAVAILABLE
        else:
            log.error(
                "request %s: unexpected error in %s",
                self.request_id,
                path,
                exc_info=(type(original), original, original.__traceback__) if original else None,
            )
            message, code = self.error_message, INTERNAL_SERVER_ERROR
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": code, "requestId": self.request_id},
        )
