"""Server layer: live subscriptions that many sockets ask alike run once (multiplexed).

Sockets of one caller that subscribe with the same document, operation name and variables
would each be sent the same results: the subscription runs once, in a group of its own, and
every member socket gets each result (the very same object) through a queue of its own. A
member that falls `QUEUE_LIMIT` results behind is told so (SUBSCRIBER_LAGGING) and ends, as a
subscriber the broker drops; the others go on. The group ends when its last member leaves.

Catch-up (an `after` argument: each socket starts from its own position), queries and
mutations run per socket as usual, and so does a large document (over the document caches'
entry bound): telling whether it is a live subscription would parse it a second time.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import GraphQLError, OperationType, get_operation_ast, parse, visit
from graphql.language import BREAK, ArgumentNode, Visitor
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.utils.aio import aclosing

from domain.model import TenantId
from graphql_engine.document_cache import MAX_ENTRY_BYTES, ByteBoundedCache, source_bytes
from resolvers.context import Caller, Context, Services
from resolvers.subscriptions import lagging_error
from server.events.broker import QUEUE_LIMIT

log = logging.getLogger(__name__)

Result = ExecutionResult | PreExecutionError


class _Signal(enum.Enum):
    END = enum.auto()
    LAGGED = enum.auto()


class _Member:
    """One socket's operation in a group: the results it has still to send."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Result | _Signal] = asyncio.Queue()
        self.closed = False

    def offer(self, result: Result) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            # What is queued is still sent; then the member hears it fell behind.
            self.closed = True
            self.queue.put_nowait(_Signal.LAGGED)
            return
        self.queue.put_nowait(result)

    def end(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(_Signal.END)


@dataclass(frozen=True, slots=True)
class _Operation:
    """What the results depend on; the schema and services by identity (the group holds both,
    so their ids stay theirs)."""

    schema_id: int
    services_id: int
    caller: Caller
    query: str
    operation_name: str | None
    variables: bytes


class _Group:
    def __init__(
        self,
        groups: Multiplexer,
        key: _Operation,
        schema: BaseSchema,
        context: Context,
        variables: dict[str, Any] | None,
    ) -> None:
        self._groups = groups
        self.key = key
        self.members: set[_Member] = set()
        self._task = asyncio.create_task(self._run(schema, context, variables))

    async def _run(
        self, schema: BaseSchema, context: Context, variables: dict[str, Any] | None
    ) -> None:
        try:
            stream = await schema.subscribe(
                self.key.query,
                variable_values=variables,
                context_value=context,
                operation_name=self.key.operation_name,
            )
            async with aclosing(stream):
                async for result in stream:
                    for member in list(self.members):
                        member.offer(result)
        except Exception:
            # Strawberry turns an operation's errors into results: this is a bug of ours.
            log.exception("a shared subscription failed; its sockets are told it completed")
        finally:
            # Taken off first: a socket subscribing from now on starts a group of its own.
            self._groups.forget(self)
            for member in self.members:
                member.end()

    def leave(self, member: _Member) -> None:
        self.members.discard(member)
        if not self.members:
            self._groups.forget(self)
            self._task.cancel()


class Multiplexer:
    """The groups running, by what their results depend on."""

    def __init__(self) -> None:
        self._groups: dict[_Operation, _Group] = {}

    def join(
        self,
        schema: BaseSchema,
        services: Services,
        caller: Caller,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> AsyncGenerator[Result, None] | None:
        """The results of a group for one more socket; None if the operation is not a live
        subscription (it then runs for the socket alone)."""
        if not _is_live_subscription(query, operation_name):
            return None
        try:
            frozen = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson's encode error: not plain JSON, run it alone
            return None
        key = _Operation(id(schema), id(services), caller, query, operation_name, frozen)
        return self._member(key, schema, services, variables)

    async def _member(
        self,
        key: _Operation,
        schema: BaseSchema,
        services: Services,
        variables: dict[str, Any] | None,
    ) -> AsyncGenerator[Result, None]:
        # Joined once iterated, so that a stream closed before it started leaves nothing behind.
        group = self._groups.get(key)
        if group is None:
            context = Context(services, key.caller, cache_loads=False)
            group = self._groups[key] = _Group(self, key, schema, context, variables)
        member = _Member()
        group.members.add(member)
        try:
            while True:
                item = await member.queue.get()
                if item is _Signal.END:
                    return
                if item is _Signal.LAGGED:
                    yield ExecutionResult(data=None, errors=[lagging_error()])
                    return
                yield item
        finally:
            group.leave(member)

    def sockets(self, tenant_id: TenantId) -> int:
        """How many of a tenant's operations are members of a group."""
        return sum(
            len(g.members) for k, g in self._groups.items() if k.caller.tenant_id == tenant_id
        )

    def forget(self, group: _Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]


class _FindsAfter(Visitor):
    found = False

    def enter_argument(self, node: ArgumentNode, *_: object) -> object:
        if node.name.value == "after":
            self.found = True
            return BREAK
        return None


# Whether a document (and operation name) is a live subscription: small documents only.
LIVE_CHECKS: ByteBoundedCache[bool] = ByteBoundedCache()


def _is_live_subscription(query: str, operation_name: str | None) -> bool:
    size = source_bytes(query, MAX_ENTRY_BYTES)
    if size is None:
        return False
    return LIVE_CHECKS.get_or_make(
        (query, operation_name), size, lambda: _finds_live_subscription(query, operation_name)
    )


def _finds_live_subscription(query: str, operation_name: str | None) -> bool:
    """A subscription without `after` anywhere: every socket asking it gets the same from the
    moment it asks. A document that does not parse runs alone (and fails as usual)."""
    try:
        document = parse(query)
    except GraphQLError:
        return False
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation != OperationType.SUBSCRIPTION:
        return False
    finder = _FindsAfter()
    visit(document, finder)
    return not finder.found
