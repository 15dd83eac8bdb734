"""The fast executor answers exactly what Strawberry's own executor answers, errors included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
import strawberry
from strawberry.permission import BasePermission
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graphql_engine.execution import FastExecutionContext


@strawberry.enum
class Colour(StrEnum):
    RED = "RED"
    DARK_BLUE = "DARK_BLUE"


class Allowed(BasePermission):
    message = "no"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return bool(info.context["allowed"])


@strawberry.type
class Leaf:
    name: str
    at: datetime


@strawberry.type
class Thing:
    id: strawberry.ID
    name: str
    nickname: str | None
    colour: Colour
    colours: list[Colour]
    tags: list[str | None]
    leaves: list[Leaf]
    secret: str = strawberry.field(permission_classes=[Allowed], default="s3cret")
    broken: str = "ok"

    @strawberry.field
    async def later(self) -> str:
        return f"later {self.name}"

    @strawberry.field
    def shout(self, loud: bool = False) -> str:
        return self.name.upper() if loud else self.name


def thing(n: int, **changes: Any) -> Thing:
    values: dict[str, Any] = {
        "id": strawberry.ID(f"t{n}"),
        "name": f"thing {n}",
        "nickname": None if n % 2 else f"nick {n}",
        "colour": Colour.DARK_BLUE if n % 2 else Colour.RED,
        "colours": [Colour.RED, Colour.DARK_BLUE],
        "tags": ["a", None],
        "leaves": [
            Leaf(name=f"leaf {i}", at=datetime(2026, 1, i + 1, tzinfo=UTC)) for i in range(3)
        ],
    }
    values.update(changes)
    return Thing(**values)


@strawberry.type
class Query:
    @strawberry.field
    def things(self, info: strawberry.Info) -> list[Thing]:
        return list(info.context["things"])


def schemas() -> tuple[strawberry.Schema, strawberry.Schema]:
    regular = strawberry.Schema(
        query=Query, execution_context_class=StrawberryGraphQLCoreExecutionContext
    )
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    return regular, fast


EVERYTHING = """
query Everything($loud: Boolean!, $withTags: Boolean!) {
  things {
    colour name alias: name ...More id
    tags @include(if: $withTags)
    later shout(loud: $loud) leaves { at name }
  }
}
fragment More on Thing { nickname colours }
"""


async def both(query: str, context: dict[str, Any], **variables: Any) -> list[Any]:
    answers = []
    for schema in schemas():
        result = await schema.execute(query, variable_values=variables, context_value=context)
        errors = [(e.message, e.path) for e in result.errors or ()]
        answers.append((result.data, errors))
    return answers


async def test_plain_fields_come_out_as_the_regular_executor_gives_them() -> None:
    context = {"things": [thing(n) for n in range(4)], "allowed": True}
    regular, fast = await both(EVERYTHING, context, loud=True, withTags=True)
    assert fast == regular
    data = fast[0]["things"][1]
    assert list(data) == [
        "colour",
        "name",
        "alias",
        "nickname",
        "colours",
        "id",
        "tags",
        "later",
        "shout",
        "leaves",
    ]
    assert data["colour"] == "DARK_BLUE" and data["colours"] == ["RED", "DARK_BLUE"]
    assert data["leaves"][0] == {"at": "2026-01-01T00:00:00+00:00", "name": "leaf 0"}


async def test_any_alias_and_many_shapes_come_out_as_the_regular_executor_gives_them() -> None:
    # The fast executor generates code per selection shape: keys that are Python keywords or
    # dunders are only data there, and each shape (order, nullability) gets its own code.
    context = {"things": [thing(n) for n in range(3)], "allowed": True}
    selections = [
        "class: name return: nickname None: colour __class__: id",
        "__import__: name leaves { def: at lambda: name }",
        "nickname name",
        "name nickname",
        "a: name b: name c: tags",
    ]
    for selection in selections:
        regular, fast = await both(f"{{ things {{ {selection} }} }}", context)
        assert fast == regular
        assert not fast[1]
    assert fast[0]["things"][0] == {"a": "thing 0", "b": "thing 0", "c": ["a", None]}


async def test_datetimes_come_out_as_the_regular_executor_formats_them() -> None:
    moments = [
        datetime(2026, 11, 28, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 11, 28, 0, 0, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 29, 5, 30, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 11, 29, tzinfo=timezone(timedelta(seconds=30))),
    ]
    leaves = [Leaf(name=f"leaf {i}", at=at) for i, at in enumerate(moments)]
    context = {"things": [thing(0, leaves=leaves)], "allowed": True}
    regular, fast = await both("{ things { leaves { at } } }", context)
    assert fast == regular
    assert [leaf["at"] for leaf in fast[0]["things"][0]["leaves"]] == [
        at.isoformat() for at in moments
    ]


@pytest.mark.parametrize(
    "broken",
    [
        {"name": None},
        {"colour": "PURPLE"},
        {"colours": [Colour.RED, None]},
        {"colours": "RED"},
        {"leaves": [Leaf(name=None, at=datetime(2026, 1, 1, tzinfo=UTC))]},  # type: ignore[arg-type]
    ],
)
async def test_a_bad_value_fails_with_the_regular_error_and_path(broken: dict[str, Any]) -> None:
    context = {"things": [thing(0), thing(1, **broken)], "allowed": True}
    regular, fast = await both(EVERYTHING, context, loud=False, withTags=False)
    assert regular[1], "the regular executor reports an error"
    assert fast == regular


async def test_fields_with_permissions_still_see_the_context() -> None:
    query = "{ things { name secret } }"
    for allowed in (True, False):
        context = {"things": [thing(0)], "allowed": allowed}
        regular, fast = await both(query, context)
        assert fast == regular
    assert fast[1] == [("no", ["things", 0, "secret"])]


async def test_plain_fields_skip_the_per_field_machinery(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    original = StrawberryGraphQLCoreExecutionContext.build_resolve_info

    def counting(self: Any, field_def: Any, *args: Any) -> Any:
        built.append(type(self).__name__)
        return original(self, field_def, *args)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "build_resolve_info", counting)
    context = {"things": [thing(n) for n in range(10)], "allowed": True}
    await both(EVERYTHING, context, loud=True, withTags=True)
    regular = built.count("StrawberryGraphQLCoreExecutionContext")
    fast = built.count("FastExecutionContext")
    # Only `things` needs an info object, and on each thing `later`, `shout` (resolvers of
    # ours) and `tags` (a list under a directive, which might be @stream).
    assert fast == 1 + 3 * 10 < regular
