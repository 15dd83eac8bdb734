"""Server layer: the database engine, with SQLite made safe for concurrent writers, and the
runner that does SQLite reads and writes whole on the event loop (`SqliteRunner`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar
from weakref import WeakKeyDictionary

import orjson
import sqlalchemy
from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, SingletonThreadPool

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOLED_PAGE_CACHE_KIB = 256
# `sqlite_begin` for a statement that is a transaction of its own.
NO_BEGIN = "NONE"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction for a writer: BEGIN IMMEDIATE on SQLite (the write lock up front, so a
    read-modify-write cannot interleave with another writer), in turn with the process's other
    SQLite writers (see `SqliteRunner`); a plain BEGIN elsewhere."""
    begin = engine.execution_options(sqlite_begin="IMMEDIATE").begin()
    runner = _runners.get(engine.sync_engine)
    if runner is None:
        async with begin as connection:
            yield connection
        return
    async with runner.turn, begin as connection:
        yield connection


class Reader(Protocol):
    """Runs a read (a function of a connection) and gives back its result."""

    def __call__(self, work: Callable[[Connection], T], /) -> Awaitable[T]: ...


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[Reader]:
    """The reads of one unit of work. On SQLite each runs through the engine's `SqliteRunner`,
    as a transaction of its own; elsewhere they share one transaction on a pooled connection."""
    runner = _runners.get(engine.sync_engine)
    if runner is not None:
        yield runner.read
        return
    async with engine.connect() as connection:
        await connection.begin()
        yield connection.run_sync


async def run_write(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """Run `work` as one writer transaction: committed when it returns, rolled back if it raises.

    On SQLite through the engine's `SqliteRunner`, elsewhere on a pooled connection. `work` may
    run twice on SQLite (see `SqliteRunner.write`): it must only read and write through
    `connection`.
    """
    runner = _runners.get(engine.sync_engine)
    if runner is not None:
        return await runner.write(work)
    async with engine.begin() as connection:
        return await connection.run_sync(work)


class SqliteRunner:
    """Runs SQLite reads and write transactions whole, without awaiting in between.

    SQLite is a library in this process, not a server: a point read or a small write takes
    microseconds, less than a hand-off to aiosqlite's thread and back (and on a busy machine
    each hand-off wakes a thread that competes with the event loop for a core). Worse, SQLite
    has one writer at a time, and a write transaction whose every statement awaits that thread
    holds the write lock for many turns of a busy event loop, while the writers queued behind it
    back off in SQLite's busy handler (sleeping up to 100 ms at a time).

    So work runs at once on the event loop, on a connection that never waits for a lock
    (readers do not need one in WAL mode). Writers take turns on an asyncio lock (so does
    `write_transaction`), so this process's writers do not find the lock taken by each other.
    Only when SQLite is busy (another process holds the write lock, or a connection of this one
    that does not take turns) does the work go to a thread of its own that waits for the lock.
    """

    def __init__(self, url: URL, **engine_options: Any) -> None:
        file = url.set(drivername="sqlite+pysqlite")
        self._at_once = _runner_engine(file, 0, engine_options)
        self._waiting = _runner_engine(file, SQLITE_BUSY_TIMEOUT_MS, engine_options)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-waiting")
        # Held by the process's SQLite writer of the moment (`write_transaction` too).
        self.turn = asyncio.Lock()

    async def read(self, work: Callable[[Connection], T]) -> T:
        return await self._run(_read, work)

    async def write(self, work: Callable[[Connection], T]) -> T:
        async with self.turn:
            return await self._run(_transaction, work)

    async def _run(
        self,
        run: Callable[[Engine, Callable[[Connection], T]], T],
        work: Callable[[Connection], T],
    ) -> T:
        try:
            return run(self._at_once, work)
        except OperationalError as error:
            if not _busy(error):
                raise
        # Rolled back: run it again where waiting for the lock blocks nobody.
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, run, self._waiting, work
        )

    @property
    def engines(self) -> tuple[Engine, ...]:
        return self._at_once, self._waiting

    def dispose(self) -> None:
        self._at_once.dispose()
        # That connection belongs to the thread (pysqlite checks): close it there.
        self._thread.submit(self._waiting.dispose).result()


def _runner_engine(url: URL, busy_timeout_ms: int, options: dict[str, Any]) -> Engine:
    # Transactions here are writers'; reads say so (`_read`).
    engine = sqlalchemy.create_engine(
        url,
        poolclass=SingletonThreadPool,
        execution_options={"sqlite_begin": "IMMEDIATE"},
        **options,
    )
    _make_sqlite_transactional(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    return engine


def _busy(error: OperationalError) -> bool:
    code = getattr(error.orig, "sqlite_errorcode", 0)
    return code & 0xFF == sqlite3.SQLITE_BUSY  # SQLITE_BUSY, or one of its extended codes


def _read(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as connection:
        return work(connection.execution_options(sqlite_begin=NO_BEGIN))


def _transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as connection:
        return work(connection)


# The runner of each SQLite engine made by `create_engine`, by its sync engine.
_runners: WeakKeyDictionary[Engine, SqliteRunner] = WeakKeyDictionary()


async def read_statement(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """A read of one statement (`work` runs it), which needs no transaction around it: on
    SQLite through the engine's `SqliteRunner` (at once, on the event loop: keep it to what an
    index answers), elsewhere on a pooled connection in autocommit."""
    runner = _runners.get(engine.sync_engine)
    if runner is not None:
        return await runner.read(work)
    async with single_statement_reader(engine).connect() as connection:
        return await connection.run_sync(work)


def statement_engines(engine: AsyncEngine) -> tuple[Engine, ...]:
    """Every engine that runs statements for `engine`: its own and its SQLite runner's (for
    listeners that must see every statement)."""
    runner = _runners.get(engine.sync_engine)
    return (engine.sync_engine, *(runner.engines if runner is not None else ()))


def single_statement_reader(engine: AsyncEngine) -> AsyncEngine:
    """The engine for reads of one statement each, which need no transaction around them:
    alone, a statement is a transaction of its own, with its own snapshot. Without BEGIN and
    ROLLBACK: two fewer trips to the driver's thread on SQLite, two fewer round trips to the
    server on PostgreSQL (autocommit)."""
    if not is_sqlite(engine.url.drivername):
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine.execution_options(sqlite_begin=NO_BEGIN)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    # JSON columns through orjson: a page of certificates parses a few hundred.
    kwargs.setdefault("json_deserializer", orjson.loads)
    kwargs.setdefault("json_serializer", _json_text)
    if not is_sqlite(url):
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        return create_async_engine(url, **kwargs)
    engine = create_async_engine(url, **kwargs)
    _make_sqlite_transactional(engine.sync_engine)
    event.listen(engine.sync_engine, "connect", _limit_page_cache)
    # The runner's engines read and write JSON columns as this one does.
    json = {k: v for k, v in kwargs.items() if k in ("json_serializer", "json_deserializer")}
    runner = _runners[engine.sync_engine] = SqliteRunner(engine.url, **json)
    event.listen(engine.sync_engine, "engine_disposed", lambda _: runner.dispose())
    return engine


def _json_text(value: Any) -> str:
    # Keys that are not strings become strings, as the standard library's `json` makes them.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _limit_page_cache(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # Each pooled connection keeps a page cache of its own (SQLite's default: up to 2 MiB) of
    # pages the operating system caches anyway: smaller ones are ~15 MiB less under load.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_POOLED_PAGE_CACHE_KIB}")
    cursor.close()


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
