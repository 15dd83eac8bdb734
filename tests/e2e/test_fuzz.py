"""A schema-driven fuzz of the live endpoint with schemathesis: valid and invalid operations
for every query and mutation, against a server in the production posture. No 5xx allowed,
every error carries a code, and no response shows internals. Bounded in examples and time."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from server.http.schema import export_sdl
from tests.e2e.conftest import ServerFactory

EXAMPLES_PER_OPERATION = 40
TIME_BUDGET_SECONDS = 75.0
INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|\bSELECT\b|\bINSERT\b|sqlalchemy|sqlite3|asyncpg|/tmp/|/work/"
)


def test_fuzzing_every_operation_finds_no_server_error(start_server: ServerFactory) -> None:
    # Production posture, with the sandbox explicitly on so that its mutations are fuzzed too.
    server = start_server(env="production", sandbox=True, rate_limit_per_second=0)
    token, _ = asyncio.run(server.token("acme"))
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.graphql.from_file(export_sdl())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                # Past the budget, each operation still gets its few cases.
                if time.monotonic() > deadline and sent[case.operation.label] >= 4:
                    return
                # Invalid operations also ask for the GraphQL-over-HTTP status codes (400s).
                accept = (
                    "application/graphql-response+json"
                    if case.meta and "NEGATIVE" in str(case.meta.generation.mode).upper()
                    else "application/json"
                )
                response = case.call(
                    base_url=server.graphql_url, headers={**headers, "Accept": accept}, timeout=15
                )
                sent[case.operation.label] += 1
                statuses[response.status_code] += 1
                case.validate_response(response, checks=[not_a_server_error])
                body = response.json()
                assert "data" in body or "errors" in body, response.text
                for error in body.get("errors") or ():
                    assert error["extensions"]["code"], error
                # Validation messages quote the client's own document: only what it did not
                # send counts as a leak.
                sent_text = str(case.body)
                leaked = [m for m in INTERNALS.findall(response.text) if m not in sent_text]
                assert not leaked, response.text

            fuzz()

    total = sum(sent.values())
    assert set(sent) == {operation.label for operation in operations}, "an operation went unfuzzed"
    assert total >= len(operations) * 4
    assert not any(status >= 500 for status in statuses)
    print(f"\nfuzzed {total} requests over {len(operations)} operations; statuses {dict(statuses)}")
