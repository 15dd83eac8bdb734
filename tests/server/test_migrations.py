"""Alembic migrations: they build exactly the schema of the metadata, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from server.migrate import head_revisions, is_current, upgrade
from server.persistence.database import Database
from server.persistence.search import INDEX_TABLES, is_schema_object
from server.persistence.tables import Base
from tests.support import alembic

T = TypeVar("T")


async def _inspect(url: str, look: Callable[[Connection], T]) -> T:
    db = Database(url)
    engine = db.engine
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(look)
    finally:
        await db.dispose()


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _index_names(connection: Connection) -> set[str]:
    inspector = inspect(connection)
    return {
        index["name"]
        for table in inspector.get_table_names()
        for index in inspector.get_indexes(table)
        if index["name"] is not None
    }


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": is_schema_object}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_creates_every_table_and_index_of_the_metadata(empty_db_url: str) -> None:
    await upgrade(empty_db_url)

    tables = await _inspect(empty_db_url, _table_names)
    # SQLite's search index (migration 0005) is tables apart from the metadata.
    search_index = INDEX_TABLES if empty_db_url.startswith("sqlite") else set()
    assert tables == set(Base.metadata.tables) | {"alembic_version"} | search_index
    indexes = await _inspect(empty_db_url, _index_names)
    expected = {index.name for table in Base.metadata.tables.values() for index in table.indexes}
    assert expected <= indexes


async def test_the_migrated_schema_matches_the_metadata(db_url: str) -> None:
    assert await _inspect(db_url, _schema_diff) == []


async def test_partial_indexes_keep_their_condition(db_url: str) -> None:
    db = Database(db_url)
    engine = db.engine
    if db_url.startswith("sqlite"):
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    else:
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text(query))).all()
    finally:
        await db.dispose()
    definitions = {name: sql for name, sql in rows}

    assert "WHERE" in definitions["ix_certificates_ca_next_poll_at"]
    assert "ca_next_poll_at IS NOT NULL" in definitions["ix_certificates_ca_next_poll_at"]
    assert "WHERE" in definitions["ix_certificates_expires_issued"]
    assert "ISSUED" in definitions["ix_certificates_expires_issued"]


async def test_is_current_only_once_upgraded(empty_db_url: str) -> None:
    assert not await is_current(empty_db_url)

    await upgrade(empty_db_url)

    assert await is_current(empty_db_url)


async def test_upgrading_a_current_database_again_keeps_its_data(db_url: str) -> None:
    db = Database(db_url)
    engine = db.engine
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO tenants (id, name, created_at) "
                    "VALUES ('t1', 'acme', CURRENT_TIMESTAMP)"
                )
            )

        await upgrade(db_url)

        async with engine.connect() as connection:
            names = (await connection.execute(text("SELECT name FROM tenants"))).scalars().all()
    finally:
        await db.dispose()
    assert names == ["acme"]
    assert await is_current(db_url)


async def test_two_upgrades_at_once_take_turns(empty_db_url: str) -> None:
    # Opened once first: two connections turning a brand-new SQLite file to WAL at the same
    # instant can fail in the database's connect hook, which is not what this test is about.
    assert not await is_current(empty_db_url)

    await asyncio.gather(upgrade(empty_db_url), upgrade(empty_db_url))

    assert await is_current(empty_db_url)
    assert await _inspect(empty_db_url, _schema_diff) == []


async def test_downgrading_to_base_removes_every_table(db_url: str) -> None:
    await alembic(db_url, "downgrade", "base")
    assert await _inspect(db_url, _table_names) == {"alembic_version"}
    assert not await is_current(db_url)


def test_there_is_one_head_revision() -> None:
    assert len(head_revisions()) == 1
