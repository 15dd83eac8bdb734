"""Timestamps come back as aware UTC datetimes, equal to what was written, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Column, MetaData, Table, insert, select, text

from server.persistence.database import Database
from server.persistence.tables import UtcDateTime

WRITTEN = [
    datetime(2026, 11, 28, 23, 59, 59, 123456, tzinfo=UTC),
    datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC),  # no microseconds: stored shorter
    datetime(2026, 11, 29, 1, 30, tzinfo=timezone(timedelta(hours=2))),  # stored as UTC
]


async def test_timestamps_read_back_as_the_same_instant_in_utc(db_url: str) -> None:
    table = Table("stamps", MetaData(), Column("at", UtcDateTime()))
    db = Database(db_url)
    engine = db.engine
    try:
        async with engine.begin() as connection:
            await connection.run_sync(table.create)
            await connection.execute(insert(table), [{"at": at} for at in WRITTEN])
            if engine.dialect.name == "sqlite":
                # Text SQLAlchemy did not write (a hand-made row, a tool): read the general way.
                await connection.execute(text("INSERT INTO stamps VALUES ('2026-11-29T00:00:00')"))
            read = (await connection.execute(select(table.c.at))).scalars().all()
    finally:
        await db.dispose()

    assert read[:3] == WRITTEN
    assert all(at.tzinfo is UTC for at in read)
    assert read[2].hour == 23
    if len(read) > 3:
        assert read[3] == datetime(2026, 11, 29, tzinfo=UTC)
