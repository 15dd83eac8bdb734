"""Server layer: one database transaction per domain service call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db import is_sqlite
from server.persistence.repository import SqlCertificateRepository, SqlIdempotencyKeys


class SqlUnitOfWork:
    certificates: SqlCertificateRepository
    idempotency: SqlIdempotencyKeys

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime], *, write: bool) -> None:
        self._engine = engine
        self._clock = clock
        self._write = write
        self._connection: AsyncConnection | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        connection = await self._engine.connect()
        if self._write and is_sqlite(str(self._engine.url)):
            connection = await connection.execution_options(sqlite_begin="IMMEDIATE")
        await connection.begin()
        self._connection = connection
        now = self._clock()
        self.certificates = SqlCertificateRepository(connection, now)
        self.idempotency = SqlIdempotencyKeys(connection, now)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        try:
            if self._connection.in_transaction():
                await self._connection.rollback()
        finally:
            await self._connection.close()
            self._connection = None

    async def commit(self) -> None:
        assert self._connection is not None
        await self._connection.commit()


class SqlUnitOfWorkFactory:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._engine, self._clock, write=write)
