"""No N+1: the SQL a page costs does not grow with the page size."""

from __future__ import annotations

from tests.resolvers.conftest import Api, at, insert_certificate
from tests.support import counting_statements

EVERY_FIELD = """
query Everything($first: Int!) {
  certificates(first: $first) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    nodes { id }
    edges {
      cursor
      node {
        id name type domainType brand domain additionalDomains status statusLabel
        availableActions version createdAt updatedAt issuedAt expiresAt
        domainValidation { method records { name type value } verifiedAt }
        organization { name country verifiedAt }
        lastWithdrawal {
          id status failureReason previousStatus requestedAt resolvedAt
          certificate { id status events { id kind } }
        }
        events { id kind fromStatus toStatus at message }
      }
    }
  }
}
"""


async def insert_withdrawn(api: Api, count: int) -> None:
    """`count` certificates whose withdrawal the CA is reviewing (3 events each)."""
    for i in range(count):
        await insert_certificate(
            api.container.db.engine,
            api.acme.tenant_id,
            name=f"web-{i}",
            domain=f"web-{i}.example.com",
            created_at=at(i),
            status="CA_VERIFYING_WITHDRAWAL",
            withdrawn=True,
        )


async def test_a_page_with_every_field_costs_the_same_sql_for_10_and_100(
    still_api: Api,
) -> None:
    api = still_api  # no background worker adding statements of its own
    db = api.container.db
    await insert_withdrawn(api, 120)

    counts: dict[int, list[str]] = {}
    for size in (10, 100):
        with counting_statements(db) as statements:
            data = await api.data(EVERY_FIELD, {"first": size})
        page = data["certificates"]
        assert len(page["edges"]) == size
        assert all(len(e["node"]["events"]) == 3 for e in page["edges"])
        assert all(e["node"]["lastWithdrawal"]["status"] == "PENDING" for e in page["edges"])
        counts[size] = statements

    assert len(counts[10]) == len(counts[100]), (counts[10], counts[100])
    selects = [s for s in counts[100] if s.lstrip().upper().startswith("SELECT")]
    # The page, its count, and one batch of events (the withdrawals' certificates are the
    # page's own, already loaded).
    assert len(selects) == 3, selects


HISTORY = "events { id kind fromStatus toStatus at message }"


async def test_a_page_reads_its_events_in_one_query_and_as_one_certificate_has_them(
    still_api: Api,
) -> None:
    api = still_api
    db = api.container.db
    await insert_withdrawn(api, 5)
    one_by_one = {}
    for node in (await api.data("{ certificates(first: 5) { nodes { id } } }"))["certificates"][
        "nodes"
    ]:
        query = f"query($id: ID!) {{ certificate(id: $id) {{ {HISTORY} }} }}"
        single = await api.data(query, {"id": node["id"]})
        one_by_one[node["id"]] = single["certificate"]["events"]
    assert all(len(history) == 3 for history in one_by_one.values())

    through_nodes = f"{{ certificates(first: 5) {{ nodes {{ id {HISTORY} }} }} }}"
    through_fragment = (
        "{ certificates(first: 5) { edges { node { ...H } } } } "
        f"fragment H on Certificate {{ id {HISTORY} }}"
    )
    for query in (through_nodes, through_fragment):
        with counting_statements(db) as statements:
            page = (await api.data(query))["certificates"]
        nodes = page.get("nodes") or [edge["node"] for edge in page["edges"]]
        assert {node["id"]: node["events"] for node in nodes} == one_by_one
        assert len([s for s in statements if "certificate_events" in s]) == 1

    with counting_statements(db) as statements:
        await api.data("{ certificates(first: 5) { nodes { id name } } }")
    assert not [s for s in statements if "certificate_events" in s]
