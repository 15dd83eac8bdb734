"""Every statement has a time budget, on both backends and on every path a read or a write
takes; a statement past it is stopped, leaves nothing behind, and counts as an outage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import Connection, text

from server.http.outages import is_outage
from server.persistence.database import Database
from server.persistence.time_limits import DatabaseLimits, StatementTimeout

# Counting to 10^8 takes a minute or more: a test that waited for it would time out instead.
ENDLESS = text(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
    "SELECT count(*) FROM n"
)
SETTING = text("INSERT INTO simca_settings (key, value) VALUES (:key, '1')")


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url, DatabaseLimits(statement_timeout_seconds=0.05))
    yield db
    await db.dispose()


def endless(connection: Connection) -> int:
    return int(connection.execute(ENDLESS).scalar_one())


def settings_count(connection: Connection) -> int:
    return int(connection.execute(text("SELECT count(*) FROM simca_settings")).scalar_one())


@pytest.mark.parametrize("by_key", [True, False], ids=["by key", "scan"])
async def test_a_read_past_its_budget_is_stopped_as_an_outage_and_the_next_read_runs(
    db: Database, by_key: bool
) -> None:
    with pytest.raises(StatementTimeout) as stopped:
        await db.read(endless, by_key=by_key)

    assert is_outage(stopped.value)
    assert await db.read(settings_count, by_key=by_key) == 0


async def test_a_read_of_a_unit_of_work_past_its_budget_is_stopped(db: Database) -> None:
    with pytest.raises(StatementTimeout):
        async with db.reading() as read:
            await read(endless)


async def test_a_write_past_its_budget_is_stopped_and_leaves_nothing_behind(
    db: Database,
) -> None:
    def insert_then_count_forever(connection: Connection) -> int:
        connection.execute(SETTING, {"key": "half"})
        return endless(connection)

    with pytest.raises(StatementTimeout):
        await db.write(insert_then_count_forever)

    assert await db.read(settings_count) == 0
    # The writer's turn was given back: the next write goes through.
    await db.write(store("whole"))
    assert await db.read(settings_count) == 1


async def test_the_budget_stops_only_what_runs_past_it(db_url: str) -> None:
    db = Database(db_url, DatabaseLimits(statement_timeout_seconds=5))
    try:
        counted = await db.read(lambda c: int(c.scalar(text(SHORT_COUNT)) or 0))
    finally:
        await db.dispose()

    assert counted == 100_000


SHORT_COUNT = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
    "SELECT count(*) FROM n"
)


def store(key: str) -> Callable[[Connection], None]:
    def write(connection: Connection) -> None:
        connection.execute(SETTING, {"key": key})

    return write
