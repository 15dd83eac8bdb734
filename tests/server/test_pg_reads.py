"""PostgreSQL reads: one round trip each (no ping per checkout), and a connection the server
dropped costs the next read nothing but a reconnect."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.http.app import create_app
from server.migrate import upgrade
from server.persistence.database import Database
from server.persistence.tenants import TenantStore
from server.settings import Settings
from tests.support import counting_statements


@pytest.fixture
async def migrated_pg_url(pg_url: str) -> str:
    await upgrade(pg_url)
    return pg_url


@contextmanager
def driver_queries(engine: AsyncEngine) -> Iterator[list[str]]:
    """What asyncpg sends on its own for SQLAlchemy (BEGIN, a ping, ROLLBACK), on connections
    made meanwhile; SQLAlchemy's statements are counted by `counting_statements`."""
    sent: list[str] = []

    def log_queries(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    event.listen(engine.sync_engine, "connect", log_queries)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "connect", log_queries)


def backend_pid(connection: Connection) -> int:
    return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


async def terminate(url: str, pid: int) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


@pytest.mark.parametrize("pre_ping", [False, True], ids=["as configured", "with pre-ping"])
async def test_a_read_is_one_statement_on_the_wire(pg_url: str, pre_ping: bool) -> None:
    db = Database(pg_url, **({"pool_pre_ping": True} if pre_ping else {}))
    engine = db.engine
    try:
        with driver_queries(engine) as extra:
            # The first read connects and prepares; the ones after reuse both.
            await db.read(backend_pid)
            extra.clear()
            with counting_statements(db) as statements:
                for _ in range(5):
                    await db.read(backend_pid)
    finally:
        await db.dispose()

    assert len(statements) == 5
    # The counter sees a ping when there is one: BEGIN, ";" and ROLLBACK before each read.
    assert extra == ([] if not pre_ping else ["BEGIN;", ";", "ROLLBACK;"] * 5)


async def test_reads_after_the_server_dropped_the_pooled_connection_succeed(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        first = await db.read(backend_pid)
        await terminate(pg_url, first)
        second = await db.read(backend_pid)
        await terminate(pg_url, second)
        async with db.reading() as read:
            third = await read(backend_pid)
            # Later reads of the unit of work share its transaction, on the same connection.
            assert await read(backend_pid) == third
    finally:
        await db.dispose()

    assert len({first, second, third}) == 3


async def test_graphql_answers_after_the_server_dropped_every_pooled_connection(
    migrated_pg_url: str,
) -> None:
    app = create_app(Settings(database_url=migrated_pg_url, rate_limit_per_second=0))
    db = app.state.container.db
    token = await TenantStore(db).create_token("acme")
    transport = httpx.ASGITransport(app=app)
    query = {"query": "{ viewer { tenant { name } } certificates { totalCount } }"}
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            before = await http.post("/graphql", json=query, headers=headers)
            dsn = make_url(migrated_pg_url).set(drivername="postgresql")
            admin = await asyncpg.connect(dsn.render_as_string(hide_password=False))
            try:
                dropped = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await admin.close()
            after = await http.post("/graphql", json=query, headers=headers)
    finally:
        await db.dispose()

    assert dropped >= 1
    expected = {"data": {"viewer": {"tenant": {"name": "acme"}}, "certificates": {"totalCount": 0}}}
    assert (before.status_code, before.json()) == (200, expected)
    assert (after.status_code, after.json()) == (200, expected)
