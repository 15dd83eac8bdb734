"""Server layer: the database engine, with SQLite made safe for concurrent writers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import sqlalchemy
from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# `sqlite_begin` for a statement that is a transaction of its own.
NO_BEGIN = "NONE"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def write_transaction(engine: AsyncEngine) -> AbstractAsyncContextManager[AsyncConnection]:
    """A transaction for a writer: BEGIN IMMEDIATE on SQLite (the write lock up front, so a
    read-modify-write cannot interleave with another writer); a plain BEGIN elsewhere."""
    return engine.execution_options(sqlite_begin="IMMEDIATE").begin()


async def run_write(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """Run `work` as one writer transaction: committed when it returns, rolled back if it raises.

    On SQLite the whole transaction runs on the engine's writer thread, in one hand-off. SQLite
    has one writer at a time: a transaction whose every statement awaits the driver's thread
    holds the lock for many turns of a busy event loop, and the writers queued behind it back
    off in SQLite's busy handler. One thread writing in turn never waits on the lock within the
    process. Elsewhere `work` runs on a pooled connection.
    """
    writer = _writers.get(engine.sync_engine)
    if writer is not None:
        return await writer.run(work)
    async with engine.begin() as connection:
        return await connection.run_sync(work)


class SqliteWriter:
    """One thread with its own connection to a SQLite file, running write transactions in turn."""

    def __init__(self, url: URL) -> None:
        engine = sqlalchemy.create_engine(url.set(drivername="sqlite+pysqlite"), pool_size=1)
        _make_sqlite_transactional(engine)
        self._engine = engine
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

    async def run(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._transaction, work
        )

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        with self._writer.begin() as connection:
            return work(connection)

    def dispose(self) -> None:
        # The connection belongs to the thread (pysqlite checks): close it there.
        self._thread.submit(self._engine.dispose).result()


# The writer of each SQLite engine made by `create_engine`, by its sync engine.
_writers: WeakKeyDictionary[Engine, SqliteWriter] = WeakKeyDictionary()


def single_statement_reader(engine: AsyncEngine) -> AsyncEngine:
    """The engine for reads of one statement each. On SQLite such a statement runs without
    BEGIN: alone it is a transaction of its own, with its own snapshot, and BEGIN and ROLLBACK
    would be two more trips to the driver's thread. Elsewhere the engine itself."""
    if not is_sqlite(engine.url.drivername):
        return engine
    return engine.execution_options(sqlite_begin=NO_BEGIN)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if not is_sqlite(url):
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        return create_async_engine(url, **kwargs)
    engine = create_async_engine(url, **kwargs)
    _make_sqlite_transactional(engine.sync_engine)
    writer = _writers[engine.sync_engine] = SqliteWriter(engine.url)
    event.listen(engine.sync_engine, "engine_disposed", lambda _: writer.dispose())
    return engine


def _make_sqlite_transactional(engine: Engine) -> None:
    """SQLAlchemy's documented recipe: let SQLAlchemy, not the driver, emit BEGIN.

    pysqlite's own transaction handling starts transactions lazily, so a read-modify-write
    could interleave with another writer. Writers ask for BEGIN IMMEDIATE (execution option
    `sqlite_begin`), which takes the write lock up front; WAL lets readers go on meanwhile.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The timeout first: switching a new file to WAL needs the lock other openers hold.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode != NO_BEGIN:
            connection.exec_driver_sql(f"BEGIN {mode}")

    rollback = engine.dialect.do_rollback

    def _rollback_if_open(dbapi_connection: Any) -> None:
        # Nothing to roll back after statements run without BEGIN: skip the trip to the thread.
        if dbapi_connection.driver_connection.in_transaction:
            rollback(dbapi_connection)

    engine.dialect.do_rollback = _rollback_if_open  # type: ignore[method-assign]
