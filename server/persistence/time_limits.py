"""Server layer: the time limits on database work, and the errors that say one was passed.

    DatabaseTimeLimit            database work passed a limit; an outage to the client (HTTP 503
    │                            with Retry-After, or the GraphQL code SERVICE_UNAVAILABLE)
    ├── StatementTimeout         one statement ran past its budget and was stopped
    └── WriteDeadlineExceeded    a write waited past its deadline for its turn or the write lock

Every statement has a budget: on SQLite a progress handler stops it past its deadline (SQLite
then answers "interrupted"), on PostgreSQL the server's own `statement_timeout`. Either way
the engine raises `StatementTimeout` instead of the driver's error (`handle_error`).
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

# SQLite calls the handler every this many virtual machine steps (a few hundred microseconds
# of work): often enough to stop a scan promptly, rarely enough that the handler, which needs
# the GIL, costs a scan on a thread next to a busy event loop nothing measurable.
PROGRESS_STEPS = 10_000
# PostgreSQL's SQLSTATE for a statement cancelled (by `statement_timeout`, among others).
_QUERY_CANCELED = "57014"
_BUDGET = "certgraph_statement_budget"
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 5.0


class DatabaseTimeLimit(Exception):
    """Database work passed one of its time limits: the database is too busy for it now."""


class StatementTimeout(DatabaseTimeLimit):
    """A statement ran past its budget and was stopped; nothing it would have written stays."""


class WriteDeadlineExceeded(DatabaseTimeLimit):
    """A write waited past its deadline for its turn or for the write lock; nothing of it was
    written."""


@dataclass(frozen=True, slots=True)
class DatabaseLimits:
    """The time limits of one engine (`Settings` gives the server's)."""

    # Each statement's budget; None: none (migrations, which may rewrite whole tables).
    statement_timeout_seconds: float | None = DEFAULT_STATEMENT_TIMEOUT_SECONDS
    # How long a write may wait, for its turn and for SQLite's write lock, all told.
    write_deadline_seconds: float = 5.0
    # SQLite: reads by key (an index lookup, whose work no input can grow) run at once on the
    # event loop instead of on a reader thread. False sends them to the reader threads too.
    key_reads_on_loop: bool = True


MIGRATION_LIMITS = DatabaseLimits(statement_timeout_seconds=None, write_deadline_seconds=30.0)


class _Budget:
    """The deadline of the statement running on one SQLite connection."""

    __slots__ = ("deadline", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = math.inf

    def start(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def stop(self) -> None:
        self.deadline = math.inf

    def exceeded(self) -> bool:
        return time.monotonic() > self.deadline


def budget_sqlite_statements(engine: Engine, seconds: float | None) -> None:
    """Stop any statement of `engine` that runs past `seconds` (None: leave them be).

    The budget starts when the statement is sent and runs on while its rows are read (pysqlite
    steps through them as they are fetched); it ends when the connection goes back to the pool
    or the next statement starts.
    """
    if seconds is None:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        budget = record.info[_BUDGET] = _Budget(seconds)
        raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        if isinstance(raw, sqlite3.Connection):
            raw.set_progress_handler(budget.exceeded, PROGRESS_STEPS)
        else:
            # aiosqlite: its connection belongs to its own thread.
            dbapi_connection.run_async(
                lambda driver: driver.set_progress_handler(budget.exceeded, PROGRESS_STEPS)
            )

    @event.listens_for(engine, "before_cursor_execute")
    def _on_statement(connection: Any, *_: Any) -> None:
        budget = connection.info.get(_BUDGET)
        if budget is not None:
            budget.start()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        budget = record.info.get(_BUDGET)
        if budget is not None:
            budget.stop()


def budget_postgres_statements(seconds: float | None) -> dict[str, Any]:
    """asyncpg's `connect_args` for a server-side budget on every statement of a connection
    (the server stops the statement; no round trip of ours is spent on it)."""
    if seconds is None:
        return {}
    milliseconds = max(1, math.ceil(seconds * 1000))
    return {"server_settings": {"statement_timeout": str(milliseconds)}}


def translate_timeouts(engine: Engine) -> None:
    """Raise `StatementTimeout` for a statement the budget stopped, not the driver's error."""
    event.listen(engine, "handle_error", _translate_timeout)


def _translate_timeout(context: ExceptionContext) -> BaseException | None:
    original = context.original_exception
    if isinstance(original, sqlite3.OperationalError):
        stopped = getattr(original, "sqlite_errorcode", 0) == sqlite3.SQLITE_INTERRUPT
    else:
        stopped = getattr(original, "sqlstate", None) == _QUERY_CANCELED
    if not stopped:
        return None
    error = StatementTimeout("A statement ran past its time budget and was stopped.")
    error.__cause__ = context.sqlalchemy_exception
    return error
