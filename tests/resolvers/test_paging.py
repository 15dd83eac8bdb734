"""The certificates connection: keyset paging in every order, filters, counts, argument rules."""

from __future__ import annotations

import itertools
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pytest

from domain.model import new_id
from resolvers.connection import MAX_SEARCH_LENGTH
from resolvers.ids import CERTIFICATE, to_global_id
from server.container import Container
from server.http.schema import build_schema
from tests.resolvers.conftest import Api, at, insert_certificate, settings_for
from tests.support import counting_statements

PAGE = """
query Page($first: Int, $after: String, $last: Int, $before: String,
           $filter: CertificateFilter, $orderBy: CertificateOrder) {
  certificates(first: $first, after: $after, last: $last, before: $before,
               filter: $filter, orderBy: $orderBy) {
    edges { cursor node { id } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
COUNT = """
query Count($filter: CertificateFilter) { certificates(first: 0, filter: $filter) { totalCount } }
"""


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    domain: str | None
    expires_at: datetime | None

    @property
    def global_id(self) -> str:
        return to_global_id(CERTIFICATE, self.id)


KEYS: dict[str, Callable[[Row], Any]] = {
    "CREATED_AT": lambda r: r.created_at,
    "UPDATED_AT": lambda r: r.updated_at,
    "EXPIRES_AT": lambda r: r.expires_at,
    "DOMAIN": lambda r: r.domain,
    "NAME": lambda r: r.name,
}


def expected_order(rows: list[Row], field: str, direction: str) -> list[str]:
    """Ties broken by id in the same direction; nulls last in both directions."""
    key = KEYS[field]
    descending = direction == "DESC"
    present = sorted(
        (r for r in rows if key(r) is not None), key=lambda r: (key(r), r.id), reverse=descending
    )
    missing = sorted((r for r in rows if key(r) is None), key=lambda r: r.id, reverse=descending)
    return [r.global_id for r in present + missing]


# The columns of a `Row` written as they are.
INSERTED = ("name", "created_at", "updated_at", "domain", "expires_at")


@pytest.fixture
async def rows(api: Api) -> list[Row]:
    """31 certificates with ties in every sort key and nulls in the nullable ones."""
    made = []
    for i in range(31):
        row = Row(
            id=new_id(),
            name=["alpha", "Beta", "gamma", "beta"][i % 4],
            created_at=at(i // 2),
            updated_at=at(60 - i // 3),
            domain=None if i % 5 == 0 else f"d{i % 7}.example.com",
            expires_at=None if i % 3 == 0 else at(100 + i % 4),
        )
        await insert_certificate(
            api.container.db.engine,
            api.acme.tenant_id,
            certificate_id=row.id,
            **{column: getattr(row, column) for column in INSERTED},
        )
        made.append(row)
    return made


async def page(api: Api, **arguments: Any) -> dict[str, Any]:
    data = await api.data(PAGE, arguments)
    connection: dict[str, Any] = data["certificates"]
    assert [e["node"] for e in connection["edges"]] == connection["nodes"]
    return connection


async def walk(api: Api, size: int, *, backwards: bool = False, **arguments: Any) -> list[str]:
    """Every id, page by page, from the start (or from the end, `backwards`), in list order."""
    size_arg, cursor_arg = ("last", "before") if backwards else ("first", "after")
    came_from, goes_on = (
        ("hasNextPage", "hasPreviousPage")
        if backwards
        else (
            "hasPreviousPage",
            "hasNextPage",
        )
    )
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        connection = await page(api, **{size_arg: size, cursor_arg: cursor}, **arguments)
        ids = [n["id"] for n in connection["nodes"]]
        seen = ids + seen if backwards else seen + ids
        info = connection["pageInfo"]
        assert info[came_from] is (cursor is not None)
        if not info[goes_on]:
            return seen
        cursor = info["startCursor" if backwards else "endCursor"]
    raise AssertionError("paging did not end")


@pytest.mark.parametrize(("field", "direction"), list(itertools.product(KEYS, ["ASC", "DESC"])))
async def test_paging_forwards_and_backwards_visits_every_certificate_once_in_order(
    api: Api, rows: list[Row], field: str, direction: str
) -> None:
    order = {"field": field, "direction": direction}
    expected = expected_order(rows, field, direction)
    assert await walk(api, 4, orderBy=order) == expected
    assert await walk(api, 4, backwards=True, orderBy=order) == expected
    whole = await page(api, first=100, orderBy=order)
    assert [n["id"] for n in whole["nodes"]] == expected


async def test_the_default_order_is_newest_first(api: Api, rows: list[Row]) -> None:
    connection = await page(api, first=100)
    assert [n["id"] for n in connection["nodes"]] == expected_order(rows, "CREATED_AT", "DESC")


async def test_a_page_between_two_cursors(api: Api, rows: list[Row]) -> None:
    expected = expected_order(rows, "NAME", "ASC")
    order = {"field": "NAME", "direction": "ASC"}
    edges = (await page(api, first=100, orderBy=order))["edges"]
    between = await page(
        api, first=100, after=edges[3]["cursor"], before=edges[9]["cursor"], orderBy=order
    )
    assert [n["id"] for n in between["nodes"]] == expected[4:9]
    assert between["pageInfo"]["hasNextPage"] and between["pageInfo"]["hasPreviousPage"]
    last_two = await page(
        api, last=2, after=edges[3]["cursor"], before=edges[9]["cursor"], orderBy=order
    )
    assert [n["id"] for n in last_two["nodes"]] == expected[7:9]


async def test_first_zero_gives_an_empty_page(api: Api, rows: list[Row]) -> None:
    connection = await page(api, first=0)
    assert connection["edges"] == [] and connection["nodes"] == []
    assert connection["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": None,
        "endCursor": None,
    }


@pytest.mark.parametrize(
    "arguments",
    [{"first": 101}, {"last": 101}, {"first": -1}, {"last": -5}, {"first": 1, "last": 1}],
)
async def test_out_of_range_page_sizes_are_bad_user_input_without_data(
    api: Api, arguments: dict[str, int]
) -> None:
    result = await api.execute(PAGE, arguments)
    assert result.data is None
    assert result.errors is not None
    [error] = result.errors
    assert error.extensions == {"code": "BAD_USER_INPUT"}


@pytest.mark.parametrize("cursor", ["nonsense", "W10=", "WyJOQU1FIiwiYSIsImIiXQ=="])
async def test_a_foreign_or_broken_cursor_is_bad_user_input(
    api: Api, rows: list[Row], cursor: str
) -> None:
    # The last one is a valid NAME cursor, used here with the default CREATED_AT order.
    result = await api.execute(PAGE, {"first": 5, "after": cursor})
    assert result.data is None
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "BAD_USER_INPUT"}


async def test_page_size_100_is_allowed(api: Api, rows: list[Row]) -> None:
    assert len((await page(api, first=100))["nodes"]) == len(rows)
    assert len((await page(api, last=100))["nodes"]) == len(rows)


# ---- filters


async def count(api: Api, **filter: Any) -> int:
    data = await api.data(COUNT, {"filter": filter})
    total: int = data["certificates"]["totalCount"]
    return total


async def ids(api: Api, **filter: Any) -> set[str]:
    connection = await page(api, first=100, filter=filter)
    return {n["id"] for n in connection["nodes"]}


async def test_deleted_certificates_are_left_out_unless_named(api: Api) -> None:
    engine, tenant = api.container.db.engine, api.acme.tenant_id
    live = await insert_certificate(engine, tenant, name="live", created_at=at(1))
    deleted = await insert_certificate(
        engine, tenant, name="gone", created_at=at(2), status="DELETED"
    )
    assert await ids(api) == {live}
    assert await ids(api, search="gone") == set()
    assert await ids(api, withdrawable=False) == {live}
    assert await ids(api, status=["DELETED"]) == {deleted}
    assert await ids(api, status=["DELETED", "PENDING_APPLICATION"]) == {live, deleted}
    assert await count(api) == 1
    assert await count(api, status=["DELETED"]) == 1


async def test_status_type_and_withdrawable_filters(api: Api) -> None:
    engine, tenant = api.container.db.engine, api.acme.tenant_id
    made = {
        status: await insert_certificate(
            engine,
            tenant,
            name=status.lower(),
            created_at=at(i),
            status=status,
            type="OV" if i % 2 else "DV",
        )
        for i, status in enumerate(
            [
                "PENDING_APPLICATION",
                "PENDING_DOMAIN_VERIFICATION",
                "PENDING_ORGANIZATION_VERIFICATION",
                "CA_VERIFYING_DOMAIN_ADDITION",
                "CA_VERIFYING_WITHDRAWAL",
                "ISSUED",
                "CA_VERIFYING_DELETION",
            ]
        )
    }
    withdrawable = {
        made[s]
        for s in (
            "PENDING_DOMAIN_VERIFICATION",
            "PENDING_ORGANIZATION_VERIFICATION",
            "CA_VERIFYING_DOMAIN_ADDITION",
        )
    }
    assert await ids(api, withdrawable=True) == withdrawable
    assert await ids(api, withdrawable=False) == set(made.values()) - withdrawable
    assert await ids(api, status=["ISSUED", "PENDING_APPLICATION"]) == {
        made["ISSUED"],
        made["PENDING_APPLICATION"],
    }
    assert await ids(api, status=[]) == set()
    assert await ids(api, type=["OV"]) == {
        made[s]
        for s in (
            "PENDING_DOMAIN_VERIFICATION",
            "CA_VERIFYING_DOMAIN_ADDITION",
            "ISSUED",
        )
    }
    assert await ids(api, type=["OV"], withdrawable=True) == {
        made["PENDING_DOMAIN_VERIFICATION"],
        made["CA_VERIFYING_DOMAIN_ADDITION"],
    }
    assert await count(api, withdrawable=True) == 3


async def test_search_is_literal_and_case_insensitive(api: Api) -> None:
    engine, tenant = api.container.db.engine, api.acme.tenant_id
    percent = await insert_certificate(engine, tenant, name="100% Sure", created_at=at(1))
    underscore = await insert_certificate(engine, tenant, name="my_site", created_at=at(2))
    plain = await insert_certificate(
        engine, tenant, name="mysite", created_at=at(3), domain="shop.example.org"
    )
    assert await ids(api, search="%") == {percent}
    assert await ids(api, search="0% s") == {percent}
    assert await ids(api, search="y_s") == {underscore}
    assert await ids(api, search="MYSITE") == {plain}
    assert await ids(api, search="SHOP.Example") == {plain}
    assert await ids(api, search="site") == {underscore, plain}
    assert await ids(api, search="") == {percent, underscore, plain}


@pytest.mark.parametrize("search", ["x" * 201, "%" * 500, "🔒" * 201, "a\x00b"])
@pytest.mark.parametrize("production", [False, True])
async def test_an_overlong_or_nul_search_is_bad_user_input_before_any_query(
    still_api: Api, search: str, production: bool
) -> None:
    # No background worker: every statement counted is the request's.
    schema = build_schema(sandbox=True, production=production)
    with counting_statements(still_api.container.db) as statements:
        result = await schema.execute(
            PAGE,
            variable_values={"first": 5, "filter": {"search": search}},
            context_value=still_api.context(),
        )
    assert result.data is None
    assert result.errors is not None
    [error] = result.errors
    assert error.extensions == {"code": "BAD_USER_INPUT"}
    assert statements == []


# The longest searches allowed, in the characters that make the longest LIKE pattern: `%`,
# `_` and `/` are escaped (two bytes each), 4-byte characters, and İ, which lower-cases to two.
LONGEST = ["%" * MAX_SEARCH_LENGTH, "_/" * 100, "🔒" * MAX_SEARCH_LENGTH, "İ" * MAX_SEARCH_LENGTH]


@pytest.mark.parametrize("search", LONGEST)
async def test_the_longest_searches_are_answered(api: Api, search: str) -> None:
    match = await insert_certificate(
        api.container.db.engine, api.acme.tenant_id, name=search, created_at=at(1)
    )
    await insert_certificate(
        api.container.db.engine, api.acme.tenant_id, name="x", created_at=at(2)
    )
    assert await ids(api, search=search) == {match}
    assert await count(api, search=search) == 1


def test_no_allowed_search_reaches_sqlites_like_pattern_limit() -> None:
    """SQLite refuses a LIKE pattern over this many bytes ("LIKE or GLOB pattern too complex")."""
    limit = sqlite3.connect(":memory:").getlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH)

    def pattern_bytes(character: str) -> int:
        lowered = character.lower()
        escaped = lowered.replace("/", "//").replace("%", "/%").replace("_", "/_")
        return len(escaped.encode())

    widest = max(
        pattern_bytes(chr(code))
        for code in range(sys.maxunicode + 1)
        if not 0xD800 <= code <= 0xDFFF  # surrogates: no text holds them
    )
    assert 2 + MAX_SEARCH_LENGTH * widest < limit


async def test_with_the_search_index_switched_off_searches_agree_without_it(
    api: Api, migrated_sqlite_url: str
) -> None:
    engine, tenant = api.container.db.engine, api.acme.tenant_id
    needle = await insert_certificate(engine, tenant, name="Needle 100%", created_at=at(1))
    await insert_certificate(engine, tenant, name="needle 1000", created_at=at(2))
    off = Container(settings_for(migrated_sqlite_url, search_index=False), run_background=False)
    await off.start()
    try:
        for each, through_index in ((api, True), (replace(api, container=off), False)):
            with counting_statements(each.container.db) as statements:
                assert await ids(each, search="NEEDLE 100%") == {needle}
            assert any("certificate_search" in s for s in statements) is through_index
    finally:
        await off.close()


async def test_paging_keeps_the_filter(api: Api, rows: list[Row]) -> None:
    expected = [
        i
        for i in expected_order(rows, "CREATED_AT", "DESC")
        if next(r for r in rows if r.global_id == i).name.lower() == "beta"
    ]
    filter = {"search": "BETA"}
    assert await walk(api, 3, filter=filter) == expected
    assert await walk(api, 3, backwards=True, filter=filter) == expected
    assert await count(api, **filter) == len(expected)
