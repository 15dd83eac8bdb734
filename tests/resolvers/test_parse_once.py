"""Each operation parses its document at most once: a document the cache holds not at all, any
other once (Strawberry's parse), whether it parses or fails; a failure keeps its code."""

from __future__ import annotations

import pytest
import strawberry

from graphql_engine.document_cache import MAX_ENTRY_BYTES, DocumentCaches
from graphql_engine.limits import QueryLimits
from server.http.schema import build_schema
from tests.parses import record_parses
from tests.resolvers.conftest import Api

VIEWER = "{ viewer { tenant { name } } }"
ACME = {"viewer": {"tenant": {"name": "acme"}}}


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return record_parses(monkeypatch)


def production_schema(caches: DocumentCaches) -> strawberry.Schema:
    return build_schema(
        sandbox=False, production=True, introspection=False, limits=QueryLimits(), caches=caches
    )


def commented(query: str, size: int) -> str:
    return query + "\n#" + "x" * (size - len(query) - 2)


@pytest.mark.parametrize(
    "broken",
    ["{ viewer {", commented("{ viewer {", MAX_ENTRY_BYTES * 2)],
    ids=["small", "over-the-cache-entry-bound"],
)
async def test_a_document_that_fails_to_parse_is_parsed_once_and_keeps_its_code(
    api: Api, parses: list[str], broken: str
) -> None:
    schema = production_schema(DocumentCaches())

    for _ in range(2):
        result = await schema.execute(broken, context_value=api.context())
        assert result.data is None
        assert [e.extensions["code"] for e in result.errors or []] == ["GRAPHQL_PARSE_FAILED"]

    assert parses == [broken, broken]


async def test_a_document_is_parsed_once_then_answered_from_the_cache(
    api: Api, parses: list[str]
) -> None:
    schema = production_schema(DocumentCaches())

    for _ in range(3):
        result = await schema.execute(VIEWER, context_value=api.context())
        assert result.data == ACME

    assert parses == [VIEWER]


async def test_a_document_over_the_cache_entry_bound_is_parsed_once_per_operation(
    api: Api, parses: list[str]
) -> None:
    schema = production_schema(DocumentCaches())
    large = commented(VIEWER, MAX_ENTRY_BYTES + 1)

    for _ in range(2):
        result = await schema.execute(large, context_value=api.context())
        assert result.data == ACME

    assert parses == [large, large]


async def test_the_token_limit_still_refuses_through_strawberrys_parse(
    api: Api, parses: list[str]
) -> None:
    schema = build_schema(sandbox=False, production=True, limits=QueryLimits(max_tokens=20))
    flood = "{ " + "viewer { tenant { name } } " * 10 + "}"

    result = await schema.execute(flood, context_value=api.context())

    assert [e.extensions["code"] for e in result.errors or []] == ["TOO_MANY_TOKENS"]
    assert parses == [flood]
