"""GraphQL engine: what a client sees of an operation's top-level errors.

Every error carries a stable `extensions.code`:

    GRAPHQL_PARSE_FAILED        the document does not parse
    GRAPHQL_VALIDATION_FAILED   the document does not fit the schema (each limit has its own code,
                                see `graphql_engine.limits`)
    BAD_USER_INPUT              arguments or variables refused (paging, variable values)
    INTERNAL_SERVER_ERROR       a bug
    SERVICE_UNAVAILABLE         an outage (the database is down); retrying later helps

In production, bugs and outages are masked: the client gets a fixed message and a request id,
and the log gets the same id with the traceback. The client's own mistakes (syntax,
validation, bad input) and the typed errors of the result unions are never masked; "Did you
mean …?" suggestions are removed from them, as they would map out the schema.

The log keeps ERROR with a traceback for bugs. A client's mistakes are one INFO line per
operation: the code and start of the first message, how many more, the operation name and a
short hash of the document, never the document itself (a fuzzing client would fill the log).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.types import ExecutionContext

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
# How much of a client's own text (message, operation name) one log line keeps.
LOGGED_MESSAGE: Final = 160
LOGGED_NAME: Final = 64

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


# ---- the log


def clipped(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters: messages quote what the client sent."""
    line = " ".join(text[: limit * 2].split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def document_hash(query: str | None) -> str:
    """A short hash that tells repeated documents apart without logging them."""
    if not query:
        return "-"
    return hashlib.blake2b(query.encode("utf-8", "replace"), digest_size=4).hexdigest()


def client_code(error: GraphQLError, context: ExecutionContext | None) -> str:
    """The code ErrorCodes will give a client's error; it runs later, on the way out."""
    code = (error.extensions or {}).get("code")
    if isinstance(code, str):
        return code
    if isinstance(error, GraphQLSyntaxError):
        return GRAPHQL_PARSE_FAILED
    # Errors reported before execution started are the validator's; after, the variables'.
    if context is not None and context.result is None:
        return GRAPHQL_VALIDATION_FAILED
    return BAD_USER_INPUT


class LoggingSchema(strawberry.Schema):
    """Strawberry's schema with our log policy in `process_errors`, Strawberry's hook for it
    (its own logs every error at ERROR with the document and any traceback).

    `log_faults` is off where MaskUnexpected logs the faults, with their request ids."""

    def __init__(self, *args: Any, log_faults: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_faults = log_faults

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        mistakes = []
        for error in errors:
            if not is_unexpected(error):
                mistakes.append(error)
            elif self.log_faults:
                original = error.original_error
                assert original is not None
                log.error(
                    "unexpected error in %s",
                    ".".join(str(p) for p in error.path or ()),
                    exc_info=(type(original), original, original.__traceback__),
                )
        if mistakes:
            # One line per operation: a document can hold a hundred validation errors.
            first, context = mistakes[0], execution_context
            log.info(
                "client error %s: %s%s (operation %s, document %s)",
                client_code(first, context),
                clipped(first.message, LOGGED_MESSAGE),
                f" (and {len(mistakes) - 1} more)" if len(mistakes) > 1 else "",
                clipped(context.operation_name or "-", LOGGED_NAME) if context else "-",
                document_hash(context.query) if context else "-",
            )
