"""Production posture through a real server: limits, masking, no internals in any response."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from server.persistence.database import Database
from server.persistence.mapping import events
from server.settings import Settings
from tests.e2e.conftest import Server, ServerFactory, bearer, post

# What no response may show: a traceback, source files, SQL, driver names, file system paths.
INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|\bSELECT\b|\bINSERT\b|\bUPDATE\b|sqlalchemy|sqlite3?|asyncpg"
    r"|/tmp/|/work/|/usr/|/home/|site-packages"
)
CREATE = """
mutation { createCertificate(input: {name: "web", type: DV, domainType: SINGLE, brand: "b",
  domainQuota: 1, validityYears: 1}) { ... on CreateCertificateSuccess { certificate { id } } } }
"""
OVER_LIMITS = {
    # Eleven nested selection sets: certificates > nodes > (lastWithdrawal > certificate)...
    "QUERY_TOO_DEEP": "{ certificates { nodes { "
    + "lastWithdrawal { certificate { " * 5
    + "lastWithdrawal { id "
    + "} " * 13
    + "}",
    "TOO_MANY_ALIASES": "{ "
    + " ".join(f"a{i}: viewer {{ tenant {{ name }} }}" for i in range(16))
    + " }",
    "TOO_MANY_TOKENS": "{ " + "__typename " * 2_000 + "}",
    "QUERY_TOO_COSTLY": "{ "
    + " ".join(
        f"p{i}: certificates(first: 100) {{ nodes {{ id name domain status statusLabel"
        f" events {{ kind at }} }} }}"
        # 901 each: 12 pages cost 10,812.
        for i in range(12)
    )
    + " }",
    # One fragment spread 51 times: one field, nothing to compare.
    "TOO_MANY_DIRECTIVES": "{ "
    + "...V @include(if: true) " * 51
    + "} fragment V on Query { viewer { tenant { name } } }",
    # 40,000 pairs of `viewer` fields to compare, each with its subfields.
    "TOO_MANY_FIELD_COMPARISONS": "{ " + "viewer { tenant { name } } " * 284 + "}",
}


@pytest.fixture
def production(start_server: ServerFactory) -> Server:
    """The defaults of a production deployment (sandbox off), over the test's database."""
    return start_server(env="production", sandbox=False)


def assert_no_internals(response: httpx.Response) -> None:
    assert not INTERNALS.search(response.text), response.text


def test_the_defaults_are_the_production_posture(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url)
    assert settings.env == "production"
    assert not settings.sandbox
    assert not settings.graphiql_enabled
    assert not settings.introspection_enabled
    assert settings.cors_origins == ()
    assert (settings.max_depth, settings.max_aliases, settings.max_tokens) == (10, 15, 2_000)


@pytest.mark.parametrize("code", sorted(OVER_LIMITS))
@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json"])
async def test_each_limit_is_refused_over_http_with_its_code(
    production: Server, code: str, accept: str
) -> None:
    headers = {**await bearer(production), "Accept": accept}
    response = await post(production, json={"query": OVER_LIMITS[code]}, headers=headers)
    # The long-standing JSON answer is 200; the GraphQL-over-HTTP media type's is 400, no data.
    assert response.status_code == (200 if accept == "application/json" else 400)
    assert response.headers["content-type"].startswith(accept)
    body = response.json()
    assert code in {error["extensions"]["code"] for error in body["errors"]}
    assert ("data" in body) == (accept == "application/json")
    assert_no_internals(response)


async def test_the_sandbox_is_off_in_production_unless_asked_for(
    start_server: ServerFactory,
) -> None:
    probe = {"query": "mutation { sandboxSetCaReachable(input: {reachable: true}) { reachable } }"}
    off = start_server(env="production", sandbox=False)
    refused = (await post(off, json=probe, headers=await bearer(off))).json()
    assert refused["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    on = start_server(env="production", sandbox=True)
    allowed = (await post(on, json=probe, headers=await bearer(on))).json()
    assert allowed == {"data": {"sandboxSetCaReachable": {"reachable": True}}}


@pytest.mark.parametrize(
    "query",
    [
        "{ certificats { totalCount } }",
        "{ certificates(filter: {status: [ISSUD]}) { totalCount } }",
        "{ certificates(frist: 1) { totalCount } }",
        '{ node(id: "x") { ... on Certificat { id } } }',
        "{ certificates(orderBy: {field: NAM, direction: ASC}) { totalCount } }",
        "{ __schema { types { name } } }",
        '{ __type(name: "Certificate") { name } }',
    ],
)
async def test_production_gives_no_suggestions_and_no_introspection(
    production: Server, query: str
) -> None:
    response = await post(production, json={"query": query}, headers=await bearer(production))
    assert response.status_code == 200
    errors = response.json()["errors"]
    assert errors
    for error in errors:
        assert "Did you mean" not in error["message"]
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert_no_internals(response)


async def test_a_bug_is_masked_and_its_request_id_is_logged_with_the_traceback(
    production: Server, caplog: pytest.LogCaptureFixture
) -> None:
    headers = await bearer(production)
    created = await post(production, json={"query": CREATE}, headers=headers)
    certificate_id = created.json()["data"]["createCertificate"]["certificate"]["id"]
    # Break the database under the running server, as a bad migration or a bug would.
    db = Database(production.database_url)
    engine = db.engine
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE {events.name}"))
    finally:
        await db.dispose()
    query = {
        "query": "query($id: ID!) { certificate(id: $id) { id name events { kind } } }",
        "variables": {"id": certificate_id},
    }
    with caplog.at_level(logging.ERROR):
        response = await post(production, json=query, headers=headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    [error] = body["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    request_id = error["extensions"]["requestId"]
    assert_no_internals(response)
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert events.name in str(logged[0].exc_info[1])


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b'{"query": "{ certificate(id: \\"' + b"\\u0000" * 50 + b'\\") { id } }"}',
            "application/json",
        ),
        (
            b'{"query": "{ certificates(first: 99999999999999999999) { totalCount } }"}',
            "application/json",
        ),
        (
            b'{"query": "query($n: Int) { certificates(first: $n) { totalCount } }", '
            b'"variables": {"n": 1e400}}',
            "application/json",
        ),
        (b'{"query": "{ viewer { tenant { name } } }", "operationName": 7}', "application/json"),
        (
            b'{"query": "query A { viewer { tenant { name } } } query B { __typename }"}',
            "application/json",
        ),
        (b'{"query": "{ viewer { tenant { name } } }"}', "application/json; charset=latin-1"),
        (b'{"query": "{ viewer { tenant { name } } }"}', "application/x-www-form-urlencoded"),
    ],
    ids=["nul-id", "huge-int", "huge-float", "bad-operation-name", "ambiguous", "charset", "form"],
)
async def test_odd_requests_get_coded_answers_without_internals(
    production: Server, body: bytes, content_type: str
) -> None:
    headers = {**await bearer(production), "Content-Type": content_type}
    response = await post(production, content=body, headers=headers)
    assert response.status_code < 500, response.text
    for error in response.json().get("errors", []):
        assert error["extensions"]["code"]
    assert_no_internals(response)


async def test_a_failure_before_graphql_runs_is_a_masked_500_not_a_bare_one(
    production: Server, caplog: pytest.LogCaptureFixture
) -> None:
    headers = await bearer(production)
    # Authentication itself fails: the token table is gone.
    db = Database(production.database_url)
    engine = db.engine
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE api_tokens"))
    finally:
        await db.dispose()
    with caplog.at_level(logging.ERROR):
        response = await post(production, json={"query": "{ __typename }"}, headers=headers)
    assert response.status_code == 500
    [error] = response.json()["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert any(error["extensions"]["requestId"] in r.getMessage() for r in caplog.records)
    assert_no_internals(response)
