"""The HTTP edge of /graphql: GraphiQL, GET, bad bodies (always 4xx, never 5xx), production."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, ServerFactory

VIEWER = "{ viewer { tenant { name } } }"
CREATE = """
mutation { createCertificate(input: {name: "x", type: DV, domainType: SINGLE, brand: "b",
  domainQuota: 1, validityYears: 1}) { __typename } }
"""


@pytest.fixture
async def token(server: Server) -> str:
    value, _ = await server.token("acme")
    return value


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_graphql_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "data" not in body
    [error] = body["errors"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["extensions"]["code"], str)
    return dict(error)


def test_graphiql_is_served_in_development_without_a_token(server: Server) -> None:
    response = httpx.get(server.graphql_url, headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


def test_graphiql_can_be_turned_off(start_server: ServerFactory) -> None:
    server = start_server(graphiql=False)
    response = httpx.get(server.graphql_url, headers={"Accept": "text/html"})
    assert_graphql_error(response, 404)


def test_a_query_over_get_is_answered(server: Server, token: str) -> None:
    response = httpx.get(server.graphql_url, params={"query": VIEWER}, headers=auth(token))
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"tenant": {"name": "acme"}}}}


def test_a_mutation_over_get_is_refused(server: Server, token: str) -> None:
    response = httpx.get(server.graphql_url, params={"query": CREATE}, headers=auth(token))
    error = assert_graphql_error(response, 405)
    assert "POST" in error["message"]
    listed = httpx.post(
        server.graphql_url, json={"query": "{ certificates { totalCount } }"}, headers=auth(token)
    )
    assert listed.json()["data"]["certificates"]["totalCount"] == 0


def test_a_subscription_over_http_is_refused(server: Server, token: str) -> None:
    query = "subscription { certificateStatusChanged { status } }"
    response = httpx.post(server.graphql_url, json={"query": query}, headers=auth(token))
    error = assert_graphql_error(response, 400)
    assert "WebSocket" in error["message"]


def test_other_methods_are_refused(server: Server, token: str) -> None:
    response = httpx.put(server.graphql_url, json={"query": VIEWER}, headers=auth(token))
    assert_graphql_error(response, 405)


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"[]",
        b'[{"query": "{ viewer { tenant { name } } }"}]',
        b'"a string"',
        b"42",
        b"true",
        b"{",
        b"",
        b"\xff\xfe{}",
        b'{"query": "\xff"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
    ids=[
        "null",
        "list",
        "batch",
        "string",
        "number",
        "boolean",
        "truncated",
        "empty",
        "bad-utf8",
        "bad-utf8-inside",
        "deep-list",
        "deep-object",
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(server: Server, token: str, body: bytes) -> None:
    response = httpx.post(
        server.graphql_url,
        content=body,
        headers={**auth(token), "Content-Type": "application/json"},
    )
    assert_graphql_error(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"query": None},
        {"query": 5},
        {"variables": {}},
        {"query": VIEWER, "variables": [1]},
        {"query": VIEWER, "variables": "x"},
        {"query": VIEWER, "extensions": 3},
    ],
)
def test_a_malformed_operation_is_a_400(server: Server, token: str, body: dict[str, Any]) -> None:
    response = httpx.post(server.graphql_url, json=body, headers=auth(token))
    assert_graphql_error(response, 400)


async def test_a_body_over_the_limit_is_a_413(start_server: ServerFactory) -> None:
    server = start_server(max_body_bytes=10_000, auth="off")

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit holds while the body streams in.
        yield b'{"query": "' + b" " * 8_000
        yield b" " * 8_000 + b'{ viewer { tenant { name } } }"}'

    async with httpx.AsyncClient() as client:
        big = {"query": VIEWER, "variables": {"pad": "x" * 20_000}}
        assert_graphql_error(await client.post(server.graphql_url, json=big), 413)
        streamed = await client.post(
            server.graphql_url, content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_graphql_error(streamed, 413)
        small = await client.post(server.graphql_url, json={"query": VIEWER})
        assert small.status_code == 200


def test_a_body_that_is_not_json_is_a_415(server: Server, token: str) -> None:
    response = httpx.post(
        server.graphql_url, content=VIEWER, headers={**auth(token), "Content-Type": "text/plain"}
    )
    assert_graphql_error(response, 415)


@pytest.mark.parametrize(
    "query",
    [
        "{" * 20_000,
        "{ viewer " + "{ tenant " * 5_000 + "}" * 5_001,
        "query { " + "a: viewer { tenant { name } } " * 5_000 + "}",
    ],
    ids=["unbalanced", "deep", "wide"],
)
def test_an_absurd_query_is_answered_with_errors_not_a_crash(
    server: Server, token: str, query: str
) -> None:
    response = httpx.post(server.graphql_url, json={"query": query}, headers=auth(token))
    assert response.status_code < 500
    assert response.json()["errors"]


def test_bad_paging_arguments_are_bad_user_input_with_no_data(server: Server, token: str) -> None:
    response = httpx.post(
        server.graphql_url,
        json={"query": "{ certificates(first: 1000) { totalCount } }"},
        headers=auth(token),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT"}


async def test_production_hides_graphiql_introspection_and_suggestions(
    start_server: ServerFactory,
) -> None:
    server = start_server(env="production", sandbox=False)
    token, _ = await server.token("acme")
    async with httpx.AsyncClient(headers=auth(token)) as client:
        page = await client.get(server.graphql_url, headers={"Accept": "text/html"})
        assert_graphql_error(page, 404)
        introspection = await client.post(
            server.graphql_url, json={"query": "{ __schema { types { name } } }"}
        )
        assert introspection.json()["errors"]
        typo = await client.post(
            server.graphql_url, json={"query": "{ certificats { totalCount } }"}
        )
        [error] = typo.json()["errors"]
        assert "Did you mean" not in error["message"]
        sandbox = await client.post(
            server.graphql_url,
            json={"query": "mutation { sandboxSetCaReachable(input: {reachable: false}) { x } }"},
        )
        assert "sandboxSetCaReachable" in sandbox.json()["errors"][0]["message"]
