"""Server layer: `Database`, the one object through which the process reaches its database.

It owns the engine and, on SQLite, the `SqliteRunner`, and offers the ways work runs on them:
reads of one statement (`read`), the reads of one unit of work (`reading`), and writer
transactions (`write`), each within its time limits (`server.persistence.time_limits`). Work
is a plain function of a `Connection`: what runs it, and where, is the database's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from server.persistence.sqlite_runner import SqliteRunner, make_sqlite_transactional
from server.persistence.time_limits import (
    DatabaseLimits,
    budget_postgres_statements,
    budget_sqlite_statements,
    translate_timeouts,
)

T = TypeVar("T")
SQLITE_POOLED_PAGE_CACHE_KIB = 256
# A pooled PostgreSQL connection is replaced after this long, before a server or a network
# device in between drops it for having lived (or idled) too long.
PG_POOL_RECYCLE_SECONDS = 1800


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class Reader(Protocol):
    """Runs a read (a function of a connection) and gives back its result. `by_key`: the read
    is an index lookup whose work no input can grow (on SQLite it may then run at once on the
    event loop); otherwise it may scan, and runs where it blocks nobody."""

    def __call__(
        self, work: Callable[[Connection], T], /, *, by_key: bool = False
    ) -> Awaitable[T]: ...


class Database:
    """The engine for `url` with its `limits`, and the paths work takes on it.

    On SQLite every read and write goes through the `SqliteRunner` (its own synchronous
    engines: see there why); on PostgreSQL through the engine's pool. `engine` (async) is for
    what needs an `AsyncConnection` of its own: the LISTEN connection, and tests setting up
    rows in plain SQL. `engine_options` go to the engine (and, for JSON, the runner's).
    """

    def __init__(
        self, url: str, limits: DatabaseLimits | None = None, **engine_options: Any
    ) -> None:
        self.limits = limits or DatabaseLimits()
        self.is_sqlite = is_sqlite(url)
        # JSON columns through orjson: a page of certificates parses a few hundred.
        engine_options.setdefault("json_deserializer", orjson.loads)
        engine_options.setdefault("json_serializer", _json_text)
        self._runner: SqliteRunner | None = None
        if self.is_sqlite:
            self.engine = self._sqlite_engine(url, engine_options)
        else:
            self.engine = self._postgres_engine(url, engine_options)

    def _postgres_engine(self, url: str, options: dict[str, Any]) -> AsyncEngine:
        # No `pool_pre_ping`: it costs a round trip per checkout. A dead connection is found by
        # the statement that uses it instead; the pool then drops every connection made before
        # it, and reads try once more (`read`, `reading`).
        options.setdefault("pool_recycle", PG_POOL_RECYCLE_SECONDS)
        options.setdefault("pool_size", 10)
        options.setdefault("max_overflow", 10)
        connect_args = {
            **budget_postgres_statements(self.limits.statement_timeout_seconds),
            **options.pop("connect_args", {}),
        }
        engine = create_async_engine(url, connect_args=connect_args, **options)
        translate_timeouts(engine.sync_engine)
        return engine

    def _sqlite_engine(self, url: str, options: dict[str, Any]) -> AsyncEngine:
        limits = self.limits
        engine = create_async_engine(url, **options)
        make_sqlite_transactional(engine.sync_engine, round(limits.write_deadline_seconds * 1000))
        budget_sqlite_statements(engine.sync_engine, limits.statement_timeout_seconds)
        translate_timeouts(engine.sync_engine)
        event.listen(engine.sync_engine, "connect", _limit_page_cache)
        # The runner's engines read and write JSON columns as this one does.
        json = {k: v for k, v in options.items() if k in ("json_serializer", "json_deserializer")}
        self._runner = SqliteRunner(engine.url, limits, **json)
        return engine

    async def read(self, work: Callable[[Connection], T], *, by_key: bool = False) -> T:
        """A read of one statement (`work` runs it), which needs no transaction around it:
        alone, a statement is a transaction of its own, with its own snapshot.

        On SQLite through the runner (see `Reader` for `by_key`). On PostgreSQL on a pooled
        connection in autocommit: no BEGIN and ROLLBACK, so one round trip; a connection found
        dead (the server restarted, say) is dropped and the read tried once more on a new one.
        """
        if self._runner is not None:
            return await self._runner.read(work, by_key=by_key)
        autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        try:
            async with autocommit.connect() as connection:
                return await connection.run_sync(work)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        async with autocommit.connect() as connection:
            return await connection.run_sync(work)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Reader]:
        """The reads of one unit of work. On SQLite each runs through the runner, as a
        transaction of its own; on PostgreSQL they share one transaction on a pooled
        connection."""
        if self._runner is not None:
            yield self._runner.read
            return
        reads = _SharedTransaction(self.engine)
        try:
            yield reads
        finally:
            await reads.close()

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` as one writer transaction: committed when it returns, rolled back if it
        raises. The process's only way to write.

        On SQLite through the runner: BEGIN IMMEDIATE (the write lock up front, so a
        read-modify-write cannot interleave with another writer), in turn with the process's
        other writers, within the write deadline. `work` may then run twice (see
        `SqliteRunner.write`): it must only read and write through `connection`. On PostgreSQL
        a plain BEGIN on a pooled connection.
        """
        if self._runner is not None:
            return await self._runner.write(work)
        async with self.engine.begin() as connection:
            return await connection.run_sync(work)

    def statement_engines(self) -> tuple[Engine, ...]:
        """Every engine that runs statements: the async engine's and the SQLite runner's (for
        listeners that must see every statement)."""
        runner = self._runner.engines if self._runner is not None else ()
        return (self.engine.sync_engine, *runner)

    async def dispose(self) -> None:
        """Close every pooled connection (the database may be used again: new ones open)."""
        await self.engine.dispose()
        if self._runner is not None:
            await self._runner.dispose()


class _SharedTransaction:
    """Reads sharing one transaction, begun at the first read. The pool does not ping a
    connection before handing it out (that costs a round trip per read): a connection found
    dead at the first read is dropped, and the read tried once more on a new one. Later reads
    are not retried, as they would see another snapshot."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None

    async def __call__(self, work: Callable[[Connection], T], /, *, by_key: bool = False) -> T:
        if self._connection is not None:
            return await self._connection.run_sync(work)
        try:
            return await self._first(work)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        return await self._first(work)

    async def _first(self, work: Callable[[Connection], T]) -> T:
        connection = await self._engine.connect()
        try:
            await connection.begin()
            result = await connection.run_sync(work)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        return result

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


def _json_text(value: Any) -> str:
    # Keys that are not strings become strings, as the standard library's `json` makes them.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _limit_page_cache(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # Each pooled connection keeps a page cache of its own (SQLite's default: up to 2 MiB) of
    # pages the operating system caches anyway: smaller ones are ~15 MiB less under load.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_POOLED_PAGE_CACHE_KIB}")
    cursor.close()
