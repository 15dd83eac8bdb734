"""Resolver layer: builds the Strawberry schema (with or without the sandbox mutations)."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    DisableIntrospection,
    MaskErrors,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig

from resolvers.mutations import Mutation
from resolvers.query import Query
from resolvers.sandbox import SandboxMutation
from resolvers.subscriptions import Subscription
from resolvers.types import Certificate, Withdrawal

CACHE_SIZE = 512


@strawberry.type(name="Mutation")
class MutationWithSandbox(Mutation, SandboxMutation):
    pass


def is_unexpected(error: GraphQLError) -> bool:
    """Mask only what a resolver raised by accident (a bug), never the client's own mistakes.

    Syntax, validation and argument errors arise outside any field (no path), and errors
    raised on purpose for the client (bad paging arguments) are GraphQLErrors themselves.
    """
    original = error.original_error
    return (
        error.path is not None and original is not None and not isinstance(original, GraphQLError)
    )


def build_schema(
    sandbox: bool, *, production: bool = False, introspection: bool = True
) -> strawberry.Schema:
    """The API schema. `production` masks unexpected errors and drops field suggestions."""
    # Classes or zero-argument factories: Strawberry makes fresh instances per operation.
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        lambda: ParserCache(maxsize=CACHE_SIZE),
        lambda: ValidationCache(maxsize=CACHE_SIZE),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    if production:
        extensions.append(lambda: MaskErrors(should_mask_error=is_unexpected))
    return strawberry.Schema(
        query=Query,
        mutation=MutationWithSandbox if sandbox else Mutation,
        subscription=Subscription,
        # Reachable only through the Node interface from `node(id:)`, so named here.
        types=[Certificate, Withdrawal],
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=production),
    )


def export_sdl() -> str:
    """The full schema as SDL (sandbox included), as `schema.graphql` holds it."""
    return build_schema(sandbox=True).as_str() + "\n"
