"""GraphQL engine: one execution of a subscription event for every subscriber that would get
the same result.

An event object (the root value of one event) that carries a `shared_executions` list opts in;
a context says who may share with whom through `event_sharing_key` (None: nobody). Subscribers
that get the very same event object, with the same operation, variables and sharing key, get
the very same result object; the transport formats each subscriber's own message. A thousand
subscribers of one tenant with one document cost one execution per change, not a thousand.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from typing import Any, cast

from graphql import ExecutionResult, GraphQLSchema, OperationDefinitionNode

from graphql_engine.execution import FastExecutionContext

SHARED_EXECUTIONS = "shared_executions"
SHARING_KEY = "event_sharing_key"


@dataclasses.dataclass(frozen=True, slots=True)
class SharedExecution:
    """One execution of an event, and what made it: whoever asks the same gets the same."""

    schema: GraphQLSchema
    operation: OperationDefinitionNode
    variables: dict[str, Any]
    key: object
    result: ExecutionResult | asyncio.Future[ExecutionResult]


class SharedEventExecutor(FastExecutionContext):
    """Executes a subscription event once for all subscribers that would get the same result."""

    _per_event = False

    def __copy__(self) -> SharedEventExecutor:
        # What `copy` does for a plain object (graphql-core copies the executor for each
        # event), without its generic pickling protocol, a third of an event's cost once the
        # execution itself is shared.
        executor = object.__new__(type(self))
        executor.__dict__.update(self.__dict__)
        return executor

    def build_per_event_executor(self, payload: Any) -> SharedEventExecutor:
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, SharedEventExecutor)
        executor._per_event = True
        return executor

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared = getattr(self.root_value, SHARED_EXECUTIONS, None) if self._per_event else None
        key = getattr(self.context_value, SHARING_KEY, None)
        if not isinstance(shared, list) or key is None:
            return super().execute_operation(serially)
        execution = next((e for e in shared if self._same_as(e, key)), None)
        if execution is None:
            execution = self._execute_for_all(key)
            shared.append(execution)
        if isinstance(execution.result, asyncio.Future):
            # Shielded: a subscriber that goes away cancels nothing for the others.
            return asyncio.shield(execution.result)
        return execution.result

    def _same_as(self, execution: object, key: object) -> bool:
        return (
            isinstance(execution, SharedExecution)
            and execution.operation is self.operation
            and execution.schema is self.schema
            and execution.key == key
            and execution.variables == self.variable_values.coerced
        )

    def _execute_for_all(self, key: object) -> SharedExecution:
        # One event of a subscription: never incremental delivery, one ExecutionResult.
        result = cast(
            "ExecutionResult | Awaitable[ExecutionResult]", super().execute_operation(False)
        )
        return SharedExecution(
            self.schema,
            self.operation,
            self.variable_values.coerced,
            key,
            result if isinstance(result, ExecutionResult) else asyncio.ensure_future(result),
        )


class PlainEventExecutor(SharedEventExecutor):
    """graphql-core's regular execution of every field (the fast path's off switch)."""

    fast = False
