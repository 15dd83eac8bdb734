"""Server layer: the API schema, the resolvers put together with the GraphQL engine."""

from __future__ import annotations

import strawberry
from strawberry.extensions import DisableIntrospection
from strawberry.schema.config import StrawberryConfig

from graphql_engine.document_cache import SHARED, CachedParser, CachedValidation, DocumentCaches
from graphql_engine.error_policy import (
    ErrorCodes,
    LoggingSchema,
    MaskUnexpected,
    OutagePredicate,
    never,
)
from graphql_engine.limits import ExtensionFactory, QueryLimits, limit_extensions
from graphql_engine.shared_execution import PlainEventExecutor, SharedEventExecutor
from resolvers.mutations import Mutation
from resolvers.query import Query
from resolvers.sandbox import SandboxMutation
from resolvers.subscriptions import Subscription
from resolvers.types import Certificate, Withdrawal


@strawberry.type(name="Mutation")
class MutationWithSandbox(Mutation, SandboxMutation):
    pass


def build_schema(
    sandbox: bool,
    *,
    production: bool = False,
    introspection: bool = True,
    limits: QueryLimits | None = None,
    is_outage: OutagePredicate = never,
    fast_executor: bool = True,
    caches: DocumentCaches = SHARED,
) -> strawberry.Schema:
    """The API schema. `production` masks unexpected errors and drops suggestions; `limits`
    refuses operations that are too big (see `graphql_engine.limits`); `caches` keep small documents
    parsed and validated (`graphql_engine.document_cache`)."""
    # Classes or zero-argument factories: Strawberry makes fresh instances per operation.
    extensions: list[ExtensionFactory] = [
        lambda: CachedParser(caches.parsed),
        lambda: CachedValidation(caches.validated),
        lambda: ErrorCodes(hide_suggestions=production, is_outage=is_outage),
    ]
    if limits is not None:
        extensions.extend(limit_extensions(limits))
    if not introspection:
        extensions.append(DisableIntrospection)
    if production:
        extensions.append(lambda: MaskUnexpected(is_outage=is_outage))
    return LoggingSchema(
        query=Query,
        mutation=MutationWithSandbox if sandbox else Mutation,
        subscription=Subscription,
        # Reachable only through the Node interface from `node(id:)`, so named here.
        types=[Certificate, Withdrawal],
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=production),
        # Plain leaf fields skip graphql-core's per-field machinery (graphql_engine.execution);
        # subscribers that would get the same result share one execution per event.
        execution_context_class=SharedEventExecutor if fast_executor else PlainEventExecutor,
        # In production MaskUnexpected logs each fault with the request id the client gets.
        log_faults=not production,
    )


def export_sdl() -> str:
    """The full schema as SDL (sandbox included), as `schema.graphql` holds it."""
    return build_schema(sandbox=True).as_str() + "\n"
