"""What the log gets of an operation's errors: one INFO line per client mistake, without the
document or a traceback; ERROR with the traceback and the request id for a bug."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from graphql_engine.limits import QueryLimits
from resolvers.context import Context
from server.http.schema import build_schema
from tests.resolvers.conftest import Api

SECRET_FIELD = "certificatesWithAVeryRecognisableName"


class BrokenReader:
    async def page(self, *args: object) -> Any:
        raise RuntimeError("the reader is broken")


def production() -> Any:
    return build_schema(sandbox=False, production=True, introspection=False, limits=QueryLimits())


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        ("query Broken { " + SECRET_FIELD + " { totalCount ", None, "GRAPHQL_PARSE_FAILED"),
        ("query Broken { " + SECRET_FIELD + " { totalCount } }", None, "GRAPHQL_VALIDATION_FAILED"),
        (
            "query Broken($n: Int) { certificates(first: $n) { totalCount } } # " + SECRET_FIELD,
            {"n": 500},
            "BAD_USER_INPUT",
        ),
        (
            "query Broken($n: Int) { certificates(first: $n) { totalCount } } # " + SECRET_FIELD,
            {"n": "many"},
            "BAD_USER_INPUT",
        ),
    ],
    ids=["syntax", "validation", "paging", "variable"],
)
async def test_a_client_mistake_is_one_info_line_without_the_document_or_a_traceback(
    api: Api,
    caplog: pytest.LogCaptureFixture,
    query: str,
    variables: dict[str, Any] | None,
    code: str,
) -> None:
    with caplog.at_level(logging.INFO):
        result = await production().execute(query, variables, context_value=api.context())
    [error] = result.errors or []
    assert error.extensions is not None and error.extensions["code"] == code
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.exc_info is None and record.stack_info is None
    line = record.getMessage()
    assert "\n" not in line
    assert code in line
    # The operation is named once the document parses.
    assert "Broken" in line or code == "GRAPHQL_PARSE_FAILED"
    assert SECRET_FIELD not in line or code == "GRAPHQL_VALIDATION_FAILED"
    assert "totalCount" not in line


async def test_many_validation_errors_are_one_line(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    query = "{ " + " ".join(f"missing{i}" for i in range(50)) + " }"
    with caplog.at_level(logging.INFO):
        result = await production().execute(query, context_value=api.context())
    assert len(result.errors or []) == 50
    [record] = caplog.records
    assert "(and 49 more)" in record.getMessage()


async def test_a_long_message_is_clipped_in_the_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    cursor = "x" * 100_000
    query = "query($c: String) { certificates(after: $c) { totalCount } }"
    with caplog.at_level(logging.INFO):
        result = await production().execute(query, {"c": cursor}, context_value=api.context())
    [error] = result.errors or []
    assert error.extensions is not None and error.extensions["code"] == "BAD_USER_INPUT"
    [record] = caplog.records
    assert len(record.getMessage()) < 400


async def test_a_bug_is_one_error_with_its_traceback_and_request_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Context(replace(api.context().services, reader=BrokenReader()), api.acme)
    with caplog.at_level(logging.INFO):
        result = await production().execute("{ certificates { totalCount } }", context_value=broken)
    [error] = result.errors or []
    assert error.extensions is not None
    request_id = error.extensions["requestId"]
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert request_id in record.getMessage()
    assert record.exc_info is not None and "the reader is broken" in str(record.exc_info[1])


async def test_development_logs_a_bug_once_with_its_traceback(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Context(replace(api.context().services, reader=BrokenReader()), api.acme)
    with caplog.at_level(logging.INFO):
        await build_schema(sandbox=False).execute(
            "{ certificates { totalCount } }", context_value=broken
        )
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and "the reader is broken" in str(record.exc_info[1])
