"""The parse and validation caches: small documents are kept, large ones never, and the bytes
kept stay under the bound however many distinct documents arrive."""

from __future__ import annotations

import strawberry

from graphql_engine.document_cache import MAX_ENTRY_BYTES, ByteBoundedCache, DocumentCaches
from graphql_engine.limits import QueryLimits
from server.http.schema import build_schema
from tests.resolvers.conftest import Api

VIEWER = "{ viewer { tenant { name } } }"


def schema_with(caches: DocumentCaches) -> strawberry.Schema:
    return build_schema(
        sandbox=False, production=True, introspection=False, limits=QueryLimits(), caches=caches
    )


def padded(query: str, size: int) -> str:
    """`query` grown to `size` bytes with a comment (the parser skips it; it stays one
    document of a handful of tokens)."""
    return query + "\n#" + "x" * (size - len(query) - 2)


async def test_a_small_document_is_parsed_and_validated_once(api: Api) -> None:
    caches = DocumentCaches()
    schema = schema_with(caches)

    for _ in range(3):
        result = await schema.execute(VIEWER, context_value=api.context())
        assert result.data == {"viewer": {"tenant": {"name": "acme"}}}

    assert (len(caches.parsed), caches.parsed.hits) == (1, 2)
    assert (len(caches.validated), caches.validated.hits) == (1, 2)
    assert caches.parsed.total_bytes == len(VIEWER)


async def test_a_large_document_is_answered_but_never_cached(api: Api) -> None:
    caches = DocumentCaches()
    schema = schema_with(caches)
    large = padded(VIEWER, MAX_ENTRY_BYTES + 1)

    for _ in range(2):
        result = await schema.execute(large, context_value=api.context())
        assert result.data == {"viewer": {"tenant": {"name": "acme"}}}

    assert (len(caches.parsed), caches.parsed.total_bytes, caches.parsed.hits) == (0, 0, 0)
    assert (len(caches.validated), caches.validated.total_bytes) == (0, 0)
    # One byte less and it is kept.
    await schema.execute(padded(VIEWER, MAX_ENTRY_BYTES), context_value=api.context())
    assert caches.parsed.total_bytes == caches.validated.total_bytes == MAX_ENTRY_BYTES


async def test_the_bytes_kept_stay_under_the_bound_after_many_distinct_documents(
    api: Api,
) -> None:
    bound = 64 * 1024
    caches = DocumentCaches(
        parsed=ByteBoundedCache(max_entries=1_000, max_total_bytes=bound),
        validated=ByteBoundedCache(max_entries=1_000, max_total_bytes=bound),
    )
    schema = schema_with(caches)
    documents = [padded(f"{{ viewer {{ tenant {{ name }} }} }} #{n}", 4_000) for n in range(100)]

    for document in documents:
        result = await schema.execute(document, context_value=api.context())
        assert not result.errors
        assert caches.parsed.total_bytes <= bound
        assert caches.validated.total_bytes <= bound

    # The most recent documents are the ones kept, as many as fit.
    kept = bound // 4_000
    assert len(caches.parsed) == len(caches.validated) == kept
    hits = caches.parsed.hits
    for document in documents[-kept:]:
        await schema.execute(document, context_value=api.context())
    assert caches.parsed.hits == hits + kept


def test_entries_are_evicted_least_recently_used_first_by_count_too() -> None:
    cache: ByteBoundedCache[str] = ByteBoundedCache(max_entries=2)
    cache.get_or_make("a", 1, lambda: "A")
    cache.get_or_make("b", 1, lambda: "B")
    cache.get_or_make("a", 1, lambda: "not made")  # a is now the most recent
    cache.get_or_make("c", 1, lambda: "C")

    assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
    assert cache.total_bytes == 2


async def test_a_document_that_fails_to_parse_is_not_cached_and_keeps_its_code(
    api: Api,
) -> None:
    caches = DocumentCaches()
    result = await schema_with(caches).execute("{ viewer {", context_value=api.context())

    assert result.errors
    assert [error.extensions["code"] for error in result.errors] == ["GRAPHQL_PARSE_FAILED"]
    assert len(caches.parsed) == len(caches.validated) == 0


async def test_limits_keep_the_validation_cache_hitting(api: Api) -> None:
    # The limit rules are built once per schema: were they rebuilt per operation, every
    # validation would miss (the rules are part of the key).
    caches = DocumentCaches()
    schema = schema_with(caches)
    query = "{ viewer { tenant { name } } __typename }"
    await schema.execute(query, context_value=api.context())
    await schema.execute(query, context_value=api.context())

    assert caches.validated.hits == 1
