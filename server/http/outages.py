"""Server layer: telling an outage (the database unreachable, or too busy to answer within
its time limits) from a bug, among exceptions.

An outage is answered "service unavailable, retry" (HTTP 503, or the GraphQL code
SERVICE_UNAVAILABLE); a bug is answered "unexpected error" with a request id. Neither shows
the exception's text, which may hold SQL, host names or file paths.
"""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc

from server.persistence.time_limits import DatabaseTimeLimit

# The server went away, is starting up or shutting down, or refused more connections.
_POSTGRES_OUTAGES = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)
# SQLite's only transient failure: another writer held the lock past the busy timeout.
_SQLITE_BUSY = ("database is locked", "database is busy")


def is_outage(error: BaseException) -> bool:
    """Whether `error` (or what it was raised from) means the database cannot be used now."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        # The pool had no connection to give in time.
        if isinstance(current, exc.TimeoutError):
            return True
        # Connection refused or reset, or no answer in time.
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        # A statement past its budget, a write past its deadline.
        if isinstance(current, DatabaseTimeLimit):
            return True
        if isinstance(current, _POSTGRES_OUTAGES):
            return True
        if isinstance(current, sqlite3.OperationalError) and str(current) in _SQLITE_BUSY:
            return True
        current = current.__cause__ or getattr(current, "orig", None)
    return False
