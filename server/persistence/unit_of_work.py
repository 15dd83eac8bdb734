"""Server layer: one database transaction per domain service call."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Connection

from server.persistence.changes import append_to_feed
from server.persistence.database import Database
from server.persistence.repository import (
    SqlCertificateRepository,
    SqlIdempotencyKeys,
    StaleWrite,
    Write,
)


class SqlUnitOfWork:
    """Opened for reading: reads (see `Database.reading`). Opened for writing: changes are
    queued and `commit()` writes them in one writer transaction (see `Database.write`), the
    status changes among them appended to the change feed last, just before it commits."""

    certificates: SqlCertificateRepository
    idempotency: SqlIdempotencyKeys

    def __init__(self, db: Database, clock: Callable[[], datetime], *, write: bool) -> None:
        self._db = db
        self._clock = clock
        self._write = write
        self._open = AsyncExitStack()
        self._writes: list[Write] = []
        self._feed: list[dict[str, Any]] = []

    async def __aenter__(self) -> SqlUnitOfWork:
        read = None if self._write else await self._open.enter_async_context(self._db.reading())
        now = self._clock()
        self.certificates = SqlCertificateRepository(read, now, self._writes, self._feed)
        self.idempotency = SqlIdempotencyKeys(read, now, self._writes)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Changes not committed are dropped.
        self._writes.clear()
        self._feed.clear()
        await self._open.aclose()

    async def commit(self) -> bool:
        writes, feed = list(self._writes), list(self._feed)
        self._writes.clear()
        self._feed.clear()

        def transaction(connection: Connection) -> None:
            for write in writes:
                write(connection)
            # Last: on PostgreSQL it takes the feed's lock, held until the commit right after.
            append_to_feed(connection, feed)

        try:
            await self._db.write(transaction)
        except StaleWrite:
            return False
        return True


class SqlUnitOfWorkFactory:
    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._clock = clock

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._db, self._clock, write=write)
