"""Server layer: the database engine and the ways work runs on it: reads (by key, or scans),
reads of one unit of work, and writer transactions, each within its time limits
(`server.persistence.time_limits`); on SQLite through the engine's `SqliteRunner`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar
from weakref import WeakKeyDictionary

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
DEFAULT_LIMITS = DatabaseLimits()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction for a writer: BEGIN IMMEDIATE on SQLite (the write lock up front, so a
    read-modify-write cannot interleave with another writer), in turn with the process's other
    SQLite writers (see `SqliteRunner`), waited for until the write deadline; a plain BEGIN
    elsewhere."""
    begin = engine.execution_options(sqlite_begin="IMMEDIATE").begin()
    runner = _runners.get(engine.sync_engine)
    if runner is None:
        async with begin as connection:
            yield connection
        return
    deadline = asyncio.get_running_loop().time() + runner.limits.write_deadline_seconds
    async with runner.turn(deadline), begin as connection:
        yield connection


class Reader(Protocol):
    """Runs a read (a function of a connection) and gives back its result. `by_key`: the read
    is an index lookup whose work no input can grow (on SQLite it may then run at once on the
    event loop); otherwise it may scan, and runs where it blocks nobody."""

    def __call__(
        self, work: Callable[[Connection], T], /, *, by_key: bool = False
    ) -> Awaitable[T]: ...


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[Reader]:
    """The reads of one unit of work. On SQLite each runs through the engine's `SqliteRunner`,
    as a transaction of its own; elsewhere they share one transaction on a pooled connection."""
    runner = _runners.get(engine.sync_engine)
    if runner is not None:
        yield runner.read
        return
    reads = _SharedTransaction(engine)
    try:
        yield reads
    finally:
        await reads.close()


async def run_write(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """Run `work` as one writer transaction: committed when it returns, rolled back if it raises.

    On SQLite through the engine's `SqliteRunner` (within the write deadline), elsewhere on a
    pooled connection. `work` may run twice on SQLite (see `SqliteRunner.write`): it must only
    read and write through `connection`.
    """
    runner = _runners.get(engine.sync_engine)
    if runner is not None:
        return await runner.write(work)
    async with engine.begin() as connection:
        return await connection.run_sync(work)


async def read_statement(
    engine: AsyncEngine, work: Callable[[Connection], T], *, by_key: bool = False
) -> T:
    """A read of one statement (`work` runs it), which needs no transaction around it: alone,
    a statement is a transaction of its own, with its own snapshot.

    On SQLite through the engine's `SqliteRunner` (see `Reader` for `by_key`). Elsewhere on a
    pooled connection in autocommit: no BEGIN and ROLLBACK, so one round trip; a connection
    found dead (the server restarted, say) is dropped and the read tried once more on a new one.
    """
    runner = _runners.get(engine.sync_engine)
    if runner is not None:
        return await runner.read(work, by_key=by_key)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with autocommit.connect() as connection:
            return await connection.run_sync(work)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    async with autocommit.connect() as connection:
        return await connection.run_sync(work)


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


def statement_engines(engine: AsyncEngine) -> tuple[Engine, ...]:
    """Every engine that runs statements for `engine`: its own and its SQLite runner's (for
    listeners that must see every statement)."""
    runner = _runners.get(engine.sync_engine)
    return (engine.sync_engine, *(runner.engines if runner is not None else ()))


def create_engine(url: str, limits: DatabaseLimits = DEFAULT_LIMITS, **kwargs: Any) -> AsyncEngine:
    # JSON columns through orjson: a page of certificates parses a few hundred.
    kwargs.setdefault("json_deserializer", orjson.loads)
    kwargs.setdefault("json_serializer", _json_text)
    if not is_sqlite(url):
        # No `pool_pre_ping`: it costs a round trip per checkout. A dead connection is found by
        # the statement that uses it instead; the pool then drops every connection made before
        # it, and reads try once more (`read_statement`, `reading`).
        kwargs.setdefault("pool_recycle", PG_POOL_RECYCLE_SECONDS)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        connect_args = {
            **budget_postgres_statements(limits.statement_timeout_seconds),
            **kwargs.pop("connect_args", {}),
        }
        engine = create_async_engine(url, connect_args=connect_args, **kwargs)
        translate_timeouts(engine.sync_engine)
        return engine
    engine = create_async_engine(url, **kwargs)
    make_sqlite_transactional(engine.sync_engine, round(limits.write_deadline_seconds * 1000))
    budget_sqlite_statements(engine.sync_engine, limits.statement_timeout_seconds)
    translate_timeouts(engine.sync_engine)
    event.listen(engine.sync_engine, "connect", _limit_page_cache)
    # The runner's engines read and write JSON columns as this one does.
    json = {k: v for k, v in kwargs.items() if k in ("json_serializer", "json_deserializer")}
    runner = _runners[engine.sync_engine] = SqliteRunner(engine.url, limits, **json)
    event.listen(engine.sync_engine, "engine_disposed", lambda _: runner.dispose())
    return engine


# The runner of each SQLite engine made by `create_engine`, by its sync engine.
_runners: WeakKeyDictionary[Engine, SqliteRunner] = WeakKeyDictionary()


def _json_text(value: Any) -> str:
    # Keys that are not strings become strings, as the standard library's `json` makes them.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _limit_page_cache(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # Each pooled connection keeps a page cache of its own (SQLite's default: up to 2 MiB) of
    # pages the operating system caches anyway: smaller ones are ~15 MiB less under load.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_POOLED_PAGE_CACHE_KIB}")
    cursor.close()
