"""Server layer: reading a CA adapter's decision log (simulated or ACME) by per-order cursors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, Table, select

from domain.ca import CaDecision
from server.persistence.database import Database


async def decisions_after(
    db: Database,
    log: Table,
    cursors: dict[str, int],
    from_row: Callable[[Any], CaDecision],
) -> dict[str, Sequence[CaDecision]]:
    """For each order id, its decisions with `seq` above the cursor, oldest first, in one query."""
    collected: dict[str, list[CaDecision]] = {order_id: [] for order_id in cursors}
    if not cursors:
        return {}
    query = (
        select(log).where(log.c.order_id.in_(sorted(cursors))).order_by(log.c.order_id, log.c.seq)
    )

    def read(connection: Connection) -> Sequence[RowMapping]:
        return connection.execute(query).mappings().all()

    for row in await db.read(read):
        if row["seq"] > cursors[row["order_id"]]:
            collected[row["order_id"]].append(from_row(row))
    return dict(collected)
