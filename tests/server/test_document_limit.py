"""The document limit in process: a document over it is refused before it is parsed, over POST
and GET, with either response media type; one at the limit runs. It counts UTF-8 bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query
from starlette.applications import Starlette

from graphql_engine.document_cache import MAX_ENTRY_BYTES
from server.http.app import create_app
from server.http.errors import DOCUMENT_TOO_LARGE, document_too_large
from server.persistence.tenants import TenantStore
from server.settings import Settings
from tests.parses import record_parses

# Over the parse cache's entry bound: a document at the limit is parsed for each request.
LIMIT = MAX_ENTRY_BYTES + 4096
VIEWER = "{ viewer { tenant { name } } }"
ACME = {"data": {"viewer": {"tenant": {"name": "acme"}}}}
GRAPHQL_RESPONSE = "application/graphql-response+json"


def commented(size: int, filler: str = "x") -> str:
    """VIEWER and one comment, `size` characters in all: a handful of tokens."""
    return VIEWER + "\n#" + filler * (size - len(VIEWER) - 2)


@pytest.fixture
async def app(migrated_sqlite_url: str) -> AsyncIterator[Starlette]:
    app = create_app(Settings(database_url=migrated_sqlite_url, max_document_bytes=LIMIT))
    yield app
    await app.state.container.db.dispose()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    token = await TenantStore(app.state.container.db).create_token("acme")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield client


async def send(
    client: httpx.AsyncClient, method: str, query: str, **headers: str
) -> httpx.Response:
    if method == "GET":
        return await client.get("/graphql", params={"query": query}, headers=headers)
    return await client.post("/graphql", json={"query": query}, headers=headers)


def code_of(response: httpx.Response) -> Any:
    return response.json()["errors"][0]["extensions"]["code"]


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("accept", ["application/json", GRAPHQL_RESPONSE])
async def test_a_document_over_the_limit_is_refused_before_it_is_parsed(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, method: str, accept: str
) -> None:
    parses = record_parses(monkeypatch)

    response = await send(client, method, commented(LIMIT + 1), Accept=accept)

    assert response.status_code == 413
    assert response.headers["content-type"].startswith(accept)
    assert code_of(response) == DOCUMENT_TOO_LARGE
    assert str(LIMIT) in response.json()["errors"][0]["message"]
    assert "data" not in response.json()
    assert parses == []


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_document_at_the_limit_runs_and_is_parsed_once(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    parses = record_parses(monkeypatch)
    document = commented(LIMIT)

    response = await send(client, method, document)

    assert (response.status_code, response.json()) == (200, ACME)
    assert parses == [document]


async def test_the_limit_counts_utf8_bytes_not_characters(client: httpx.AsyncClient) -> None:
    # 'é' is two bytes: LIMIT characters of it are well over LIMIT bytes.
    wide = commented(LIMIT, "é")
    assert len(wide) == LIMIT

    response = await send(client, "POST", wide)

    assert response.status_code == 413
    assert code_of(response) == DOCUMENT_TOO_LARGE
    fits = commented(LIMIT - (LIMIT - len(VIEWER) - 2) // 2, "é")
    assert len(fits.encode()) <= LIMIT
    assert (await send(client, "POST", fits)).json() == ACME


async def test_a_refused_document_needs_a_token_first(app: Starlette) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as anonymous:
        response = await send(anonymous, "POST", commented(LIMIT + 1))
    assert response.status_code == 401


def test_only_a_string_document_is_measured() -> None:
    assert document_too_large(None, 1) is None
    assert document_too_large({"query": "x" * 10}, 1) is None
    assert document_too_large("x" * 10, 10) is None
    refused = document_too_large("x" * 11, 10)
    assert refused is not None and refused.extensions == {"code": DOCUMENT_TOO_LARGE}


def test_the_limit_is_a_setting_with_a_default_that_admits_graphiqls_introspection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    everything = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    assert document_too_large(everything, Settings().max_document_bytes) is None
    monkeypatch.setenv("CERTGRAPH_MAX_DOCUMENT_BYTES", "1000")
    assert Settings().max_document_bytes == 1000
