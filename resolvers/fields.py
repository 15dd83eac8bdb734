"""Resolver layer: Strawberry's field decorators, typed for `mypy --strict`.

`@fields.field(description=...)` is typed as returning `Any`, which strict mypy refuses as
an untyped decorator. These wrappers do exactly the same at run time and tell mypy that the
decorated resolver keeps its signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import strawberry

Resolver = TypeVar("Resolver", bound=Callable[..., Any])


def field(*, description: str, prefetched_in: str | None = None) -> Callable[[Resolver], Resolver]:
    """A resolved field. `prefetched_in` names the attribute of the object where a parent may
    have loaded the value already (None when it has not): the executor then reads it like a
    plain field (`graphql_engine.execution`), and the resolver must return it when it is set."""
    metadata = None if prefetched_in is None else {PREFETCHED_IN: prefetched_in}
    return cast(
        "Callable[[Resolver], Resolver]",
        strawberry.field(description=description, metadata=metadata),
    )


def mutation(*, description: str) -> Callable[[Resolver], Resolver]:
    return cast("Callable[[Resolver], Resolver]", strawberry.mutation(description=description))


def subscription(*, description: str) -> Callable[[Resolver], Resolver]:
    return cast("Callable[[Resolver], Resolver]", strawberry.subscription(description=description))


# The field metadata key the engine reads (`graphql_engine.execution.PREFETCHED_IN`; the
# architecture keeps resolvers from importing the engine, a test keeps the two equal).
PREFETCHED_IN = "prefetched_in"
