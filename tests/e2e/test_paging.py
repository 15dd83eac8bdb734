"""Paging a filtered list of 250 certificates forwards and backwards through a real server."""

from __future__ import annotations

import random
from typing import Any

from gql.client import AsyncClientSession

from domain.model import new_id
from resolvers.ids import CERTIFICATE, to_global_id
from server.persistence.database import Database
from tests.e2e.conftest import Server, execute
from tests.resolvers.conftest import at, insert_certificate

PAGE = """
query($first: Int, $after: String, $last: Int, $before: String, $filter: CertificateFilter) {
  certificates(first: $first, after: $after, last: $last, before: $before, filter: $filter,
               orderBy: {field: NAME, direction: ASC}) {
    totalCount
    nodes { id name }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
FILTER = {"search": "-blue", "status": ["PENDING_DOMAIN_VERIFICATION", "ISSUED"]}


async def pages(
    session: AsyncClientSession, direction: str
) -> tuple[list[str], list[int], set[int]]:
    """Every page in one direction: the ids in list order, the page sizes, the totals."""
    ids: list[str] = []
    sizes: list[int] = []
    totals: set[int] = set()
    cursor: str | None = None
    while True:
        variables: dict[str, Any] = {"filter": FILTER}
        if direction == "forwards":
            variables |= {"first": 100, "after": cursor}
        else:
            variables |= {"last": 100, "before": cursor}
        connection = (await execute(session, PAGE, variables))["certificates"]
        page_ids = [node["id"] for node in connection["nodes"]]
        sizes.append(len(page_ids))
        totals.add(connection["totalCount"])
        info = connection["pageInfo"]
        if direction == "forwards":
            ids += page_ids
            more, cursor = info["hasNextPage"], info["endCursor"]
        else:
            ids = page_ids + ids
            more, cursor = info["hasPreviousPage"], info["startCursor"]
        if not more:
            return ids, sizes, totals


async def test_250_certificates_page_forwards_and_backwards_with_a_filter(
    server: Server,
) -> None:
    token, tenant_id = await server.token("acme")
    matching = [
        (f"site-{i % 100:03d}-blue", ["PENDING_DOMAIN_VERIFICATION", "ISSUED"][i % 2])
        for i in range(250)
    ]
    other_names = [
        (f"site-{i % 100:03d}-red", ["PENDING_DOMAIN_VERIFICATION", "ISSUED", "DELETED"][i % 3])
        for i in range(150)
    ]
    other_statuses = [(f"site-{i:03d}-blue", ["REJECTED", "DELETED"][i % 2]) for i in range(100)]
    specs = matching + other_names + other_statuses
    random.Random(7).shuffle(specs)
    expected: list[tuple[str, str]] = []
    db = Database(server.database_url)
    engine = db.engine
    try:
        for n, (name, status) in enumerate(specs):
            certificate_id = new_id()
            await insert_certificate(
                engine,
                tenant_id,
                certificate_id=certificate_id,
                name=name,
                created_at=at(n),
                status=status,
            )
            if (name, status) in matching:
                expected.append((name, certificate_id))
    finally:
        await db.dispose()
    # NAME ascending, ties broken by id.
    expected_ids = [to_global_id(CERTIFICATE, i) for _, i in sorted(expected)]
    assert len(expected_ids) == 250

    async with server.http(token) as http:
        forwards, forward_sizes, totals = await pages(http, "forwards")
        assert forwards == expected_ids
        assert forward_sizes == [100, 100, 50]
        assert totals == {250}

        backwards, backward_sizes, _ = await pages(http, "backwards")
        assert backwards == expected_ids
        assert backward_sizes == [100, 100, 50]

        # Another tenant sees none of them.
        other_token, _ = await server.token("globex")
    async with server.http(other_token) as other:
        connection = (await execute(other, PAGE, {"first": 100, "filter": FILTER}))["certificates"]
        assert connection["totalCount"] == 0
        assert connection["nodes"] == []
