"""Server layer: SQLite made safe for concurrent writers, and the runner that does SQLite's reads
and writes (`SqliteRunner`): point reads and writes at once on the event loop, scans on reader
threads, and every write within one deadline."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import ConnectionPoolEntry, SingletonThreadPool

from server.persistence.time_limits import (
    DatabaseLimits,
    WriteDeadlineExceeded,
    budget_sqlite_statements,
    translate_timeouts,
)

T = TypeVar("T")
# Two: a scan as long as its budget leaves the other reads a thread, and the event loop keeps
# a core of a small machine to itself.
READER_THREADS = 2
# How long opening a connection may wait for the lock that switching a file to WAL takes.
SQLITE_OPEN_TIMEOUT_MS = 30_000
# `sqlite_begin` for a statement that is a transaction of its own.
NO_BEGIN = "NONE"


class SqliteRunner:
    """Runs SQLite reads and write transactions whole, each in one place, without awaiting in
    between.

    SQLite is a library in this process, not a server: a point read or a small write takes
    microseconds, less than a hand-off to a thread and back (and on a busy machine each hand-off
    wakes a thread that competes with the event loop for a core). Worse, SQLite has one writer
    at a time, and a write transaction whose every statement awaits a thread holds the write
    lock for many turns of a busy event loop, while the writers queued behind it back off in
    SQLite's busy handler (sleeping up to 100 ms at a time).

    So reads by key and writes (a few statements by key) run at once on the event loop, on a
    connection that never waits for a lock (readers do not need one in WAL mode). Reads whose
    work grows with the data (pages under filters, counts, histories) run on reader threads,
    so that the event loop turns meanwhile. Writers take turns on an asyncio lock, so this
    process's writers do not find the lock taken by each other;
    only when SQLite is busy (another process holds the write lock) does a write go to a thread
    of its own that waits for the lock, until the write's deadline.
    """

    def __init__(self, url: URL, limits: DatabaseLimits, **engine_options: Any) -> None:
        file = url.set(drivername="sqlite+pysqlite")
        self.limits = limits
        wait_ms = round(limits.write_deadline_seconds * 1000)
        self._at_once = _runner_engine(file, 0, limits, engine_options)
        self._reading = _runner_engine(file, wait_ms, limits, engine_options)
        self._waiting = _runner_engine(file, wait_ms, limits, engine_options)
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="sqlite-reader")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-waiting")
        # Held by the process's SQLite writer of the moment.
        self._turn = asyncio.Lock()
        # Work running on (or queued for) a thread; it goes on if its caller is cancelled.
        self._on_threads: set[Future[Any]] = set()

    async def read(self, work: Callable[[Connection], T], *, by_key: bool = False) -> T:
        """`work` as a transaction of its own: at once if it reads by key (and the fast path is
        on), else on a reader thread."""
        if by_key and self.limits.key_reads_on_loop:
            try:
                return _read(self._at_once, work)
            except OperationalError as error:
                if not _busy(error):
                    raise
        return await self._on_thread(self._readers, _read, self._reading, work)

    async def write(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.write_deadline_seconds
        async with self._turn_until(deadline):
            try:
                return _transaction(self._at_once, work)
            except OperationalError as error:
                if not _busy(error):
                    raise
            # Rolled back: run it again where waiting for the lock blocks nobody.
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WriteDeadlineExceeded("No time was left to wait for the write lock.")
            try:
                return await self._on_thread(
                    self._thread, _waiting_transaction, self._waiting, work, remaining
                )
            except OperationalError as error:
                if not _busy(error):
                    raise
                raise WriteDeadlineExceeded("The write lock stayed taken too long.") from error

    @asynccontextmanager
    async def _turn_until(self, deadline: float) -> AsyncIterator[None]:
        """This process's writer turn, waited for until `deadline` (event loop time)."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._turn.acquire()
        except TimeoutError:
            raise WriteDeadlineExceeded("Other writes held the turn past the deadline.") from None
        try:
            yield
        finally:
            self._turn.release()

    @property
    def engines(self) -> tuple[Engine, ...]:
        return self._at_once, self._reading, self._waiting

    async def _on_thread(
        self, executor: ThreadPoolExecutor, run: Callable[..., T], *args: Any
    ) -> T:
        future = executor.submit(run, *args)
        self._on_threads.add(future)
        future.add_done_callback(self._on_threads.discard)
        return await asyncio.wrap_future(future)

    async def dispose(self) -> None:
        """Close the connections, once the work still running on threads is done: a caller
        cancelled meanwhile (a worker stopped mid-read, say) leaves its statement running, and
        closing a connection under a running statement crashes the process."""
        running = self._on_threads.copy()
        if running:
            await asyncio.wait([asyncio.wrap_future(future) for future in running])
        # The threads stay: an engine may be used again after `dispose` (a new pool opens).
        for engine in self.engines:
            engine.dispose()


def _runner_engine(
    url: URL, busy_timeout_ms: int, limits: DatabaseLimits, options: dict[str, Any]
) -> Engine:
    # Transactions here are writers'; reads say so (`_read`).
    engine = sqlalchemy.create_engine(
        url,
        poolclass=SingletonThreadPool,
        # One connection per thread that uses it; closed by `dispose`, from whichever thread.
        connect_args={"check_same_thread": False},
        execution_options={"sqlite_begin": "IMMEDIATE"},
        **options,
    )
    make_sqlite_transactional(engine, busy_timeout_ms)
    budget_sqlite_statements(engine, limits.statement_timeout_seconds)
    translate_timeouts(engine)
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


def _waiting_transaction(engine: Engine, work: Callable[[Connection], T], seconds: float) -> T:
    with engine.connect() as connection:
        # SQLite's busy handler waits for the lock until the write's deadline, and no longer.
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.execute(f"PRAGMA busy_timeout={max(1, round(seconds * 1000))}")
        with connection.begin():
            return work(connection)


def make_sqlite_transactional(engine: Engine, busy_timeout_ms: int) -> None:
    """SQLAlchemy's documented recipe: let SQLAlchemy, not the driver, emit BEGIN.

    pysqlite's own transaction handling starts transactions lazily, so a read-modify-write
    could interleave with another writer. Writers ask for BEGIN IMMEDIATE (execution option
    `sqlite_begin`), which takes the write lock up front; WAL lets readers go on meanwhile.
    Reads of one statement ask for no BEGIN (`NO_BEGIN`); the ROLLBACK SQLAlchemy still sends
    when their connection closes costs nothing, as pysqlite skips it when no transaction is
    open (the runner reads through pysqlite, not through aiosqlite's thread).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # A timeout first: switching a new file to WAL needs the lock other openers hold.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_OPEN_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode != NO_BEGIN:
            connection.exec_driver_sql(f"BEGIN {mode}")
