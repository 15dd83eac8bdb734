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
