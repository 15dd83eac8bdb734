"""Shared fixtures: fresh databases (a SQLite file per test, the PostgreSQL `test` database)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from server.migrate import upgrade

SERVER_URL = os.environ.get(
    "CERTGRAPH_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
# Each pytest run gets its own database on that server, so runs side by side (several
# developers, or CI next to a developer) never reset each other's tables.
PG_URL = (
    make_url(SERVER_URL)
    .set(database=f"certgraph_test_{os.getpid()}")
    .render_as_string(hide_password=False)
)

# Both backends; PostgreSQL tests fail (never skip) when the server is unreachable.
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file that does not exist yet (no schema)."""
    return _sqlite_url_in(tmp_path)


@pytest.fixture
async def migrated_sqlite_url(sqlite_url: str) -> str:
    """A SQLite file migrated to the latest revision."""
    await upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
async def pg_url() -> str:
    """The PostgreSQL test database with an empty `public` schema (no tables)."""
    return await _empty_postgres()


@pytest.fixture(params=BACKENDS)
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend, with no schema."""
    if request.param == "sqlite":
        return _sqlite_url_in(tmp_path)
    return await _empty_postgres()


@pytest.fixture
async def db_url(empty_db_url: str) -> str:
    """Each backend, migrated to the latest revision."""
    await upgrade(empty_db_url)
    return empty_db_url


def _sqlite_url_in(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'certgraph.db'}"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session", autouse=True)
def _run_database() -> Iterator[None]:
    """Create this run's PostgreSQL database on first use; drop it at the end of the run."""
    yield
    if _created:
        asyncio.run(_drop_run_database())


_created: list[str] = []


async def _ensure_run_database() -> None:
    if _created:
        return
    connection = await asyncpg.connect(_dsn(SERVER_URL), timeout=10)
    try:
        name = make_url(PG_URL).database
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
        _created.append(str(name))
    finally:
        await connection.close()


async def _drop_run_database() -> None:
    connection = await asyncpg.connect(_dsn(SERVER_URL), timeout=10)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{_created[0]}" WITH (FORCE)')
    finally:
        await connection.close()


async def _empty_postgres() -> str:
    # Tests within a run go one at a time: resetting the schema per test isolates them.
    await _ensure_run_database()
    dsn = _dsn(PG_URL)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        # A connection a previous test leaked would block the DROP: fail loudly instead.
        await connection.execute("SET lock_timeout = '10s'")
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()
    return PG_URL
