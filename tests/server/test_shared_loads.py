"""Loads by id made in one turn of the event loop share one query, and nobody gets stale rows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from domain.model import TenantId
from server.persistence.shared_loads import SharedLoads

A, B = TenantId("tenant-a"), TenantId("tenant-b")


class Table:
    def __init__(self) -> None:
        self.version = 1
        self.queries: list[tuple[TenantId, list[str]]] = []
        self.fail = False

    async def fetch(self, tenant_id: TenantId, ids: list[str]) -> Sequence[Any]:
        self.queries.append((tenant_id, ids))
        version = self.version  # what the query sees: the table as it was when it began
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("database gone")
        return [{"id": i, "tenant": tenant_id, "version": version} for i in ids]


async def test_loads_in_one_turn_share_one_query_per_tenant() -> None:
    table = Table()
    loads = SharedLoads(table.fetch)
    results = await asyncio.gather(
        *(loads.load(A, [f"c{n % 7}"]) for n in range(1000)), loads.load(B, ["c1", "c2"])
    )
    assert sorted(table.queries) == [(A, [f"c{n}" for n in range(7)]), (B, ["c1", "c2"])]
    assert [row["id"] for row in results[8]] == ["c1"]
    assert [row["id"] for row in results[-1]] == ["c1", "c2"]
    assert all(row["tenant"] == B for row in results[-1])


async def test_a_load_made_while_a_query_runs_gets_a_query_of_its_own() -> None:
    table = Table()
    loads = SharedLoads(table.fetch)
    first = asyncio.create_task(loads.load(A, ["c1"]))
    await asyncio.sleep(0.001)  # the first query is running now
    table.version = 2  # a change commits, then is announced
    second = await loads.load(A, ["c1"])
    assert (await first)[0]["version"] == 1
    assert second[0]["version"] == 2
    assert len(table.queries) == 2


async def test_an_error_reaches_every_caller_and_one_caller_leaving_leaves_the_rest() -> None:
    table = Table()
    loads = SharedLoads(table.fetch)
    leaving = asyncio.create_task(loads.load(A, ["c1"]))
    staying = asyncio.create_task(loads.load(A, ["c2"]))
    await asyncio.sleep(0)
    leaving.cancel()
    assert [row["id"] for row in await staying] == ["c2"]
    table.fail = True
    with pytest.raises(RuntimeError, match="database gone"):
        await asyncio.gather(loads.load(A, ["c1"]), loads.load(A, ["c2"]))
