"""Server layer: the database engine, with SQLite made safe for concurrent writers."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def write_transaction(engine: AsyncEngine) -> AbstractAsyncContextManager[AsyncConnection]:
    """A transaction for a writer: BEGIN IMMEDIATE on SQLite (the write lock up front, so a
    read-modify-write cannot interleave with another writer); a plain BEGIN elsewhere."""
    return engine.execution_options(sqlite_begin="IMMEDIATE").begin()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if not is_sqlite(url):
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        return create_async_engine(url, **kwargs)
    engine = create_async_engine(url, **kwargs)
    _make_sqlite_transactional(engine)
    return engine


def _make_sqlite_transactional(engine: AsyncEngine) -> None:
    """SQLAlchemy's documented recipe: let SQLAlchemy, not the driver, emit BEGIN.

    pysqlite's own transaction handling starts transactions lazily, so a read-modify-write
    could interleave with another writer. Writers ask for BEGIN IMMEDIATE (execution option
    `sqlite_begin`), which takes the write lock up front; WAL lets readers go on meanwhile.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The timeout first: switching a new file to WAL needs the lock other openers hold.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")
