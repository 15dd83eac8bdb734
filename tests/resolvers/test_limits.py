"""Query limits and error codes: each limit refuses with its own code, just past its setting."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import strawberry
from graphql import OverlappingFieldsCanBeMergedRule, get_introspection_query

from graphql_engine.limits import QueryLimits
from graphql_engine.measure import DocumentMeasure
from resolvers.context import Context
from server.http.schema import build_schema
from tests.resolvers.conftest import Api

LIMITS = QueryLimits(max_depth=5, max_aliases=3, max_tokens=200, max_cost=1_000, max_directives=4)

PAGE_FIELDS = "id name status lastWithdrawal { id status }"  # cost 6 per certificate


CONSOLE_PAGE = """
query Certificates($first: Int!, $after: String, $filter: CertificateFilter) {
  viewer { tenant { name } }
  certificates(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor } nodes { ...Row }
  }
}
fragment Row on Certificate {
  id name type domainType brand domain additionalDomains
  status statusLabel availableActions version updatedAt
  lastWithdrawal { id status failureReason requestedAt resolvedAt }
}
"""


def production(limits: QueryLimits = LIMITS) -> strawberry.Schema:
    return build_schema(sandbox=False, production=True, introspection=False, limits=limits)


def codes(result: Any) -> set[str]:
    return {error.extensions["code"] for error in result.errors or ()}


def nested(levels: int) -> str:
    """A query with `levels` nested selection sets: certificates > nodes > lastWithdrawal >
    certificate > lastWithdrawal > ... > id."""
    chain = ["certificates(first: 1)", "nodes"]
    while len(chain) < levels:
        chain += ["lastWithdrawal", "certificate"]
    chain = chain[:levels]
    return "{ " + " { ".join(chain) + " { id " + "} " * levels + "}"


def aliased(count: int) -> str:
    return "{ " + " ".join(f"a{i}: viewer {{ tenant {{ name }} }}" for i in range(count)) + " }"


def with_tokens(count: int) -> str:
    """Exactly `count` tokens: 16 around a list of statuses (a field repeated that often would
    be refused for its comparisons, TOO_MANY_FIELD_COMPARISONS)."""
    statuses = "PENDING_APPLICATION " * (count - 16)
    return f"{{ certificates(filter: {{status: [{statuses}]}}) {{ totalCount }} }}"


def with_directives(count: int) -> str:
    return "{ " + "viewer @include(if: true) { tenant { name } } " * count + "}"


def pages(*sizes: int) -> str:
    """One aliased page per size; each costs 2 + 7 per certificate (nodes and its 6 fields)."""
    selections = " ".join(
        f"p{i}: certificates(first: {size}) {{ totalCount nodes {{ {PAGE_FIELDS} }} }}"
        for i, size in enumerate(sizes)
    )
    return f"{{ {selections} }}"


@pytest.mark.parametrize(
    ("within", "beyond", "code"),
    [
        (nested(5), nested(6), "QUERY_TOO_DEEP"),
        (aliased(3), aliased(4), "TOO_MANY_ALIASES"),
        (with_tokens(200), with_tokens(201), "TOO_MANY_TOKENS"),
        # 2 + 700 + 2 + 280 = 984, then 2 + 700 + 2 + 301 = 1005.
        (pages(100, 40), pages(100, 43), "QUERY_TOO_COSTLY"),
        (with_directives(4), with_directives(5), "TOO_MANY_DIRECTIVES"),
    ],
    ids=["depth", "aliases", "tokens", "cost", "directives"],
)
async def test_each_limit_refuses_just_past_its_setting_with_its_code(
    api: Api, within: str, beyond: str, code: str
) -> None:
    schema = production()
    accepted = await schema.execute(within, context_value=api.context())
    assert not accepted.errors, accepted.errors
    refused = await schema.execute(beyond, context_value=api.context())
    assert refused.data is None
    assert code in codes(refused), refused.errors


async def test_a_cost_refusal_says_the_cost_and_the_limit(api: Api) -> None:
    refused = await production().execute(pages(100, 70))
    [error] = refused.errors or []
    assert error.extensions == {"code": "QUERY_TOO_COSTLY", "cost": 1194, "maxCost": 1_000}
    assert "1194" in error.message and "1000" in error.message
    # `last` multiplies as `first` does.
    last = await production().execute(pages(100, 70).replace("first", "last"))
    assert codes(last) == {"QUERY_TOO_COSTLY"}


async def test_cost_multiplies_the_lists_of_a_page_by_its_size_only(api: Api) -> None:
    schema = production(replace(LIMITS, max_cost=702))
    # certificates 1 + totalCount 1 + pageInfo 2 + 100 x nodes 7 = 704: refused.
    over = "{ certificates(first: 100) { totalCount pageInfo { hasNextPage } nodes { FIELDS } } }"
    assert codes(await schema.execute(over.replace("FIELDS", PAGE_FIELDS))) == {"QUERY_TOO_COSTLY"}
    # The same page without totalCount and pageInfo: 701.
    within = "{ certificates(first: 100) { nodes { FIELDS } } }".replace("FIELDS", PAGE_FIELDS)
    assert not (await schema.execute(within, context_value=api.context())).errors
    # No page size given: the default page of 20 (141 and 161).
    default = (
        "{ a: certificates { nodes { FIELDS } } b: certificates { edges { node { FIELDS } } } }"
    )
    result = await schema.execute(
        default.replace("FIELDS", PAGE_FIELDS), context_value=api.context()
    )
    assert not result.errors, result.errors


async def test_a_variable_page_size_counts_as_the_largest_page(api: Api) -> None:
    query = "query($n: Int) { certificates(first: $n) { nodes { FIELDS } } }".replace(
        "FIELDS", PAGE_FIELDS
    )
    schema = production(replace(LIMITS, max_cost=700))
    # The value is unknown while validating (and validation is cached): it counts as 100.
    for value in (1, 100):
        result = await schema.execute(query, variable_values={"n": value})
        assert codes(result) == {"QUERY_TOO_COSTLY"}
    allowed = production(replace(LIMITS, max_cost=701))
    assert not (await allowed.execute(query, {"n": 1}, context_value=api.context())).errors


async def test_fragments_count_wherever_they_are_spread(api: Api) -> None:
    query = f"""
    query {{
      a: certificates(first: 100) {{ nodes {{ ...Row }} }}
      b: certificates(first: 100) {{ nodes {{ ...Row }} }}
    }}
    fragment Row on Certificate {{ {PAGE_FIELDS} }}
    """
    # 701 per page.
    assert codes(await production().execute(query)) == {"QUERY_TOO_COSTLY"}
    # A fragment cycle is reported by the validator, not by a crash of the cost rule.
    cycle = "{ viewer { ...A } } fragment A on Viewer { ...B } fragment B on Viewer { ...A }"
    result = await production().execute(cycle)
    assert result.errors and codes(result) == {"GRAPHQL_VALIDATION_FAILED"}


def fan_out(n: int, leaf: str, level: str = "{}", on: str = "Query") -> str:
    """`...Dn`, where D0 selects `leaf` and each Di is `level` around two spreads of D(i-1):
    2^n copies of `leaf` in about 10n tokens."""
    spread = f"...D{n}"
    head = f"{{ {spread} }}" if on == "Query" else f'{{ node(id: "x") {{ {spread} }} }}'
    fragments = [f"fragment D0 on {on} {{ {leaf} }}"] + [
        f"fragment D{i} on {on} {{ {level.format(f'...D{i - 1} ...D{i - 1}')} }}"
        for i in range(1, n + 1)
    ]
    return "\n".join([head, *fragments])


WITHDRAWAL_LEVEL = "certificate {{ lastWithdrawal {{ {} }} }}"

FAMILIES: dict[str, tuple[str, str, str, Callable[[int], int], set[str]]] = {
    # D0's selection, each level's, the type of the fragments, the selection sets in the
    # document (each visited once), the codes expected.
    "cost": ("viewer { tenant { name } }", "{}", "Query", lambda n: n + 4, {"QUERY_TOO_COSTLY"}),
    "aliases": (
        "a: viewer { tenant { name } }",
        "{}",
        "Query",
        lambda n: n + 4,
        {"TOO_MANY_ALIASES", "QUERY_TOO_COSTLY"},
    ),
    "depth": (
        "id",
        WITHDRAWAL_LEVEL,
        "Withdrawal",
        lambda n: 3 * n + 3,
        {"QUERY_TOO_DEEP", "QUERY_TOO_COSTLY"},
    ),
}


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return method(*args, **kwargs)

        return counted


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n", [10, 16, 22, 26, 33, 40])
async def test_fragment_fan_out_is_refused_with_one_visit_per_selection_set(
    monkeypatch: pytest.MonkeyPatch, family: str, n: int
) -> None:
    leaf, level, on, selection_sets, expected = FAMILIES[family]
    visits, overlaps = Counter(), Counter()
    monkeypatch.setattr(DocumentMeasure, "selections", visits.wrap(DocumentMeasure.selections))
    rule = OverlappingFieldsCanBeMergedRule
    monkeypatch.setattr(rule, "enter_selection_set", overlaps.wrap(rule.enter_selection_set))
    schema = production(replace(LIMITS, max_tokens=2_000))
    result = await schema.execute(fan_out(n, leaf, level, on))
    assert result.data is None
    assert codes(result) == expected, result.errors
    # Linear: each selection set of the document once, however often its fragment is spread.
    assert visits.calls == selection_sets(n)
    # Refused before graphql-core's own rules compared a single field.
    assert overlaps.calls == 0


async def test_a_flood_of_unknown_directives_is_refused_with_its_code(api: Api) -> None:
    flood = "{ __typename " + "@aa " * 500 + "}"
    result = await production(replace(LIMITS, max_tokens=2_000)).execute(flood)
    assert "TOO_MANY_DIRECTIVES" in codes(result)


async def test_the_console_and_graphiql_queries_fit_the_default_limits(api: Api) -> None:
    defaults = build_schema(sandbox=True, limits=QueryLimits())
    page = await defaults.execute(CONSOLE_PAGE, {"first": 100}, context_value=api.context())
    assert not page.errors, page.errors
    introspection = await defaults.execute(get_introspection_query(descriptions=True))
    assert not introspection.errors, introspection.errors


@pytest.mark.parametrize(
    ("query", "cost"), [(CONSOLE_PAGE, 1908), (get_introspection_query(descriptions=True), 220)]
)
async def test_the_console_and_graphiql_queries_cost_what_they_did(query: str, cost: int) -> None:
    # The costs the path-walking rule charged before fragments were measured once.
    below = build_schema(sandbox=True, limits=replace(QueryLimits(), max_cost=cost - 1))
    [error] = (await below.execute(query, {"first": 100})).errors or []
    assert error.extensions == {"code": "QUERY_TOO_COSTLY", "cost": cost, "maxCost": cost - 1}


# ---- codes and production messages


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        ("{ certificates(", None, "GRAPHQL_PARSE_FAILED"),
        ("{ certificats { totalCount } }", None, "GRAPHQL_VALIDATION_FAILED"),
        (
            "{ certificates(filter: {status: [ISSUD]}) { totalCount } }",
            None,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ("{ certificates(frist: 1) { totalCount } }", None, "GRAPHQL_VALIDATION_FAILED"),
        ('{ node(id: "x") { ... on Certificat { id } } }', None, "GRAPHQL_VALIDATION_FAILED"),
        (
            "query($s: [CertificateStatus!]) { certificates(filter: {status: $s}) { totalCount } }",
            {"s": ["ISSUD"]},
            "BAD_USER_INPUT",
        ),
        (
            "query($f: CertificateFilter) { certificates(filter: $f) { totalCount } }",
            {"f": {"serch": "x"}},
            "BAD_USER_INPUT",
        ),
        ("{ certificates(first: 500) { totalCount } }", None, "BAD_USER_INPUT"),
    ],
    ids=["syntax", "field", "enum", "argument", "type", "variable-enum", "input-field", "paging"],
)
async def test_every_client_mistake_has_a_code_and_no_suggestion_in_production(
    api: Api, query: str, variables: dict[str, Any] | None, code: str
) -> None:
    result = await production().execute(query, variables, context_value=api.context())
    assert result.data is None
    [error] = result.errors or []
    assert error.extensions is not None and error.extensions["code"] == code
    assert "Did you mean" not in error.message


async def test_development_keeps_the_suggestions(api: Api) -> None:
    result = await api.schema.execute("{ certificates(filter: {status: [ISSUD]}) { totalCount } }")
    [error] = result.errors or []
    assert "Did you mean" in error.message
    assert error.extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}


class BrokenReader:
    """A read side whose failure message holds what must never reach a client."""

    async def page(self, *args: object) -> Any:
        raise RuntimeError("SELECT secret FROM certificates -- /srv/certgraph/server/x.py")


class DownReader:
    async def page(self, *args: object) -> Any:
        raise ConnectionRefusedError("connect to 10.0.0.5:5432 failed")


async def test_a_bug_is_masked_with_a_request_id_that_the_log_has_with_the_traceback(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Context(replace(api.context().services, reader=BrokenReader()), api.acme)
    with caplog.at_level(logging.ERROR, logger="graphql_engine.error_policy"):
        result = await production().execute("{ certificates { totalCount } }", context_value=broken)
    [error] = result.errors or []
    assert error.message == "Unexpected error."
    assert error.extensions is not None and error.extensions["code"] == "INTERNAL_SERVER_ERROR"
    request_id = error.extensions["requestId"]
    assert len(request_id) == 32
    [record] = [r for r in caplog.records if request_id in r.getMessage()]
    assert record.exc_info is not None and "SELECT secret" in str(record.exc_info[1])
    assert "SELECT" not in str(error.formatted) and ".py" not in str(error.formatted)


async def test_an_outage_is_masked_as_service_unavailable(api: Api) -> None:
    from server.http.outages import is_outage

    schema = build_schema(
        sandbox=False, production=True, introspection=False, limits=LIMITS, is_outage=is_outage
    )
    down = Context(replace(api.context().services, reader=DownReader()), api.acme)
    result = await schema.execute("{ certificates { totalCount } }", context_value=down)
    [error] = result.errors or []
    assert error.extensions is not None and error.extensions["code"] == "SERVICE_UNAVAILABLE"
    assert "10.0.0.5" not in error.message
