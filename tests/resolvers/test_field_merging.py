"""Validation's field-merging check (graphql-core's OverlappingFieldsCanBeMerged) works on a
budget of comparisons: no document within the token limit makes it compare fields for long."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from graphql import OverlappingFieldsCanBeMergedRule, parse, validate
from graphql.validation.rules import overlapping_fields_can_be_merged as overlaps

from graphql_engine.limits import QueryLimits, merge_rule
from server.http.schema import build_schema
from tests.resolvers.conftest import Api
from tests.resolvers.test_limits import CONSOLE_PAGE, LIMITS, codes, production

ROW = """
fragment Row on Certificate {
  id name type domainType brand domain additionalDomains
  status statusLabel availableActions version updatedAt
  lastWithdrawal { id status failureReason requestedAt resolvedAt }
}"""

# The console's widest document (server/static/console.js): `certificate { ...Row }` four times
# in one selection set, through the inline fragments of the result union.
CONSOLE_WITHDRAW = (
    """
mutation Withdraw($input: WithdrawApplicationInput!) {
  withdrawApplication(input: $input) {
    __typename
    ... on Error { message code }
    ... on WithdrawApplicationSuccess { certificate { ...Row } message withdrawal { id status } }
    ... on CertificateNotFoundError { certificateId }
    ... on InvalidCertificateStateError { currentStatus allowedStatuses certificate { ...Row } }
    ... on ValidationError { field }
    ... on CaUnavailableError { retryAfterSeconds }
    ... on WithdrawalNotAllowedError { reason certificate { ...Row } }
    ... on CaAlreadyApprovedError { certificate { ...Row } withdrawal { id status failureReason } }
  }
}"""
    + ROW
)

REUSED_FRAGMENT = """
{ viewer { ...V } viewer { tenant { ...T } ...V } viewer { ...V } }
fragment V on Viewer { tenant { ...T } }
fragment T on Tenant { name }
"""


def spread_together(count: int, selection: Callable[[int], str]) -> str:
    spreads = " ".join(f"...F{i}" for i in range(count))
    fragments = " ".join(f"fragment F{i} on Query {{ {selection(i)} }}" for i in range(count))
    return f"{{ {spreads} }} {fragments}"


# Each within the default limits; unbounded, each took 0.4 to 2.9 s to validate.
HOSTILE = {
    "repeated-field": "{ " + "viewer { tenant { name } } " * 284 + "}",
    "repeated-field-two-leaves": "{ " + "viewer { tenant { id name } } " * 249 + "}",
    "fragments-spread-together": spread_together(120, lambda _: "viewer { tenant { name } }"),
    "repeated-page": "{ " + "certificates { nodes { id } } " * 190 + "}",
    "repeated-typename": "{ " + "__typename " * 1_990 + "}",
    # 20 fields, each with 20 repeats of a subfield: every pair compares 400 pairs below it.
    "repeats-at-two-levels": "{ " + ("viewer { " + "tenant { name } " * 20 + "} ") * 20 + "}",
    # Compared even though no operation uses it.
    "unused-fragment": "{ __typename } fragment X on Query { "
    + "viewer { tenant { name } } " * 284
    + "}",
    # No field repeats: 220 fragments spread together are compared pairwise.
    "distinct-fragments": spread_together(220, lambda i: f"f{i}"),
}


class Comparisons:
    """Counts the pairs the rule compares: two fields, or two fragments spread together."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pairs = 0
        for name in ("find_conflict", "collect_conflicts_between_fragments"):
            monkeypatch.setattr(overlaps, name, self.counted(getattr(overlaps, name)))

    def counted(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def count(*args: Any, **kwargs: Any) -> Any:
            self.pairs += 1
            return function(*args, **kwargs)

        return count


@pytest.mark.parametrize("query", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_document_needing_too_many_comparisons_is_refused_within_the_budget(
    monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    comparisons = Comparisons(monkeypatch)
    result = await production(QueryLimits()).execute(query)
    assert result.data is None
    assert codes(result) == {"TOO_MANY_FIELD_COMPARISONS"}, result.errors
    [error] = result.errors or []
    assert "2500 comparisons" in error.message
    # At most the budget (and the attempt that finds it spent), whatever the document:
    # graphql-core's default let these reach 21,000 to 250,000.
    assert 0 < comparisons.pairs <= QueryLimits().max_field_comparisons + 1


@pytest.mark.parametrize(("within", "beyond"), [(8, 9), (71, 72)])
async def test_the_limit_refuses_just_past_its_setting(api: Api, within: int, beyond: int) -> None:
    # n copies of a leaf: n(n-1)/2 comparisons.
    schema = production(
        replace(LIMITS, max_tokens=2_000, max_field_comparisons=within * (within - 1) // 2)
    )
    typenames = "{ " + "__typename " * within + "}"
    accepted = await schema.execute(typenames, context_value=api.context())
    assert not accepted.errors, accepted.errors
    refused = await schema.execute("{ " + "__typename " * beyond + "}")
    assert codes(refused) == {"TOO_MANY_FIELD_COMPARISONS"}


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (CONSOLE_PAGE, {"first": 100}),
        (CONSOLE_WITHDRAW, {"input": {"certificateId": "no-such-certificate"}}),
        (REUSED_FRAGMENT, None),
    ],
    ids=["console-page", "console-withdraw", "fragment-reused-three-times"],
)
async def test_the_console_and_reused_fragments_stay_far_below_the_limit(
    monkeypatch: pytest.MonkeyPatch, api: Api, query: str, variables: dict[str, Any] | None
) -> None:
    comparisons = Comparisons(monkeypatch)
    defaults = build_schema(sandbox=False, production=True, limits=QueryLimits())
    result = await defaults.execute(query, variables, context_value=api.context())
    assert not result.errors, result.errors
    assert comparisons.pairs <= QueryLimits().max_field_comparisons // 50


CONFLICTS = {
    "arguments": "{ certificates(first: 1) { totalCount } certificates(first: 2) { totalCount } }",
    "fields": "{ viewer { tenant { name } } viewer { tenant: __typename } }",
    "fragment": "{ viewer { tenant { id } ...V } } fragment V on Viewer { tenant: __typename }",
    "nested-types": """{ node(id: "x") {
        ... on Certificate { lastWithdrawal { status } }
        ... on Withdrawal { lastWithdrawal: certificate { status } } } }""",
    "valid": REUSED_FRAGMENT,
}


@pytest.mark.parametrize("query", CONFLICTS.values(), ids=CONFLICTS.keys())
def test_below_the_budget_the_rule_finds_what_graphql_core_finds(query: str) -> None:
    schema = production()._schema
    document = parse(query)
    expected = validate(schema, document, [OverlappingFieldsCanBeMergedRule])
    found = validate(schema, document, [merge_rule(QueryLimits().max_field_comparisons)])
    assert [(e.message, e.locations) for e in found] == [(e.message, e.locations) for e in expected]
    assert bool(expected) == (query is not REUSED_FRAGMENT)
