"""GraphQL engine: the size of every string and list a request sends, bounded before it runs.

Whatever the field, a string longer than `MAX_INPUT_STRING` or a list longer than
`MAX_INPUT_LIST` (both in `domain.validation`) is refused with BAD_USER_INPUT before any
resolver sees it: written in the document, by a validation rule; sent as a variable, by
`InputBounds` before execution (graphql-core's coercion of the variables comes after it).
Each field's own, tighter rules (a name's 200 characters, a certificate's quota) are the
domain's, reported as typed errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from graphql import ExecutionResult, GraphQLError, ListValueNode, StringValueNode, ValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from domain.validation import MAX_INPUT_LIST, MAX_INPUT_STRING

BAD_USER_INPUT: Final = "BAD_USER_INPUT"


def too_long_string() -> str:
    return f"A string of the request has more than {MAX_INPUT_STRING} characters."


def too_long_list() -> str:
    return f"A list of the request has more than {MAX_INPUT_LIST} items."


def oversized(value: Any) -> str | None:
    """Why `value` (JSON as decoded: dicts, lists, strings, numbers) is refused, if it is.

    Iterative, and stops at the first value over a bound: the body is already bounded, but
    not its nesting."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if len(item) > MAX_INPUT_STRING:
                return too_long_string()
        elif isinstance(item, list):
            if len(item) > MAX_INPUT_LIST:
                return too_long_list()
            pending.extend(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                pending.append(key)
                pending.append(inner)
    return None


class InputBounds(SchemaExtension):
    """Refuses an operation whose variables hold a string or list over the bounds."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        problem = oversized(context.variables) if context.variables else None
        if problem is not None:
            error = GraphQLError(problem, extensions={"code": BAD_USER_INPUT})
            if context.operation_type is OperationType.SUBSCRIPTION:
                # A subscription does not look at `result`; Strawberry answers what its
                # `on_execute` raises as the subscription's one error.
                raise error
            # Strawberry does not execute an operation whose result is already set.
            context.result = ExecutionResult(data=None, errors=[error])
        yield


class LiteralBounds(ValidationRule):
    """Refuses a document that writes a string or list over the bounds."""

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        if len(node.value) > MAX_INPUT_STRING:
            self.report_error(
                GraphQLError(too_long_string(), node, extensions={"code": BAD_USER_INPUT})
            )

    def enter_list_value(self, node: ListValueNode, *_: object) -> None:
        if len(node.values) > MAX_INPUT_LIST:
            self.report_error(
                GraphQLError(too_long_list(), node, extensions={"code": BAD_USER_INPUT})
            )
