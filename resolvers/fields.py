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


def field(*, description: str) -> Callable[[Resolver], Resolver]:
    return cast("Callable[[Resolver], Resolver]", strawberry.field(description=description))


def mutation(*, description: str) -> Callable[[Resolver], Resolver]:
    return cast("Callable[[Resolver], Resolver]", strawberry.mutation(description=description))


def subscription(*, description: str) -> Callable[[Resolver], Resolver]:
    return cast("Callable[[Resolver], Resolver]", strawberry.subscription(description=description))


# The attribute a prefetchable resolver's value may already be in (see `prefetched_in`).
PREFETCHED_IN = "__certgraph_prefetched_in__"


def prefetched_in(attribute: str) -> Callable[[Resolver], Resolver]:
    """Marks a resolver whose value a parent may have loaded already into `attribute` of the
    object (None when it has not). The executor then reads the attribute like a plain field
    (`resolvers.execution`); the resolver itself must return the attribute when it is set."""

    def mark(resolver: Resolver) -> Resolver:
        setattr(resolver, PREFETCHED_IN, attribute)
        return resolver

    return mark
