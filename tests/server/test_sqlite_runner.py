"""SQLite work run whole on the event loop, and off it while another connection holds the lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from server.persistence.database import Database
from server.persistence.time_limits import DatabaseLimits

# Counting to 10^8 takes a minute or more; the statement budget stops it first.
ENDLESS = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
    "SELECT count(*) FROM n"
)
SETTING = "INSERT INTO simca_settings (key, value) VALUES (:key, :value)"


@pytest.fixture
def db_url(migrated_sqlite_url: str) -> str:
    """SQLite only: the shared `db` fixture (tests/server/conftest.py) over the migrated file."""
    return migrated_sqlite_url


@pytest.fixture
def other_writer(migrated_sqlite_url: str) -> Iterator[sqlite3.Connection]:
    """Another connection to the file, holding SQLite's write lock until it commits."""
    path = make_url(migrated_sqlite_url).database
    assert path is not None
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("BEGIN IMMEDIATE")
    yield connection
    if connection.in_transaction:
        connection.execute("COMMIT")
    connection.close()


def store(key: str) -> Callable[[Connection], None]:
    def write(connection: Connection) -> None:
        connection.execute(text(SETTING), {"key": key, "value": "1"})

    return write


def count_settings(connection: Connection) -> int:
    return int(connection.execute(text("SELECT count(*) FROM simca_settings")).scalar_one())


async def test_writes_wait_for_a_lock_held_elsewhere_without_holding_up_the_event_loop(
    db: Database, other_writer: sqlite3.Connection
) -> None:
    first = asyncio.create_task(db.write(store("first")))
    second = asyncio.create_task(db.write(store("second")))
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 20 and not first.done() and not second.done()
    async with db.reading() as read:
        # Readers go on meanwhile (WAL), and see nothing uncommitted.
        assert await read(count_settings) == 0
    other_writer.execute("COMMIT")
    await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
    async with db.reading() as read:
        assert await read(count_settings) == 2


async def test_a_write_that_raises_leaves_nothing_behind(db: Database) -> None:
    def half_done(connection: Connection) -> None:
        connection.execute(text(SETTING), {"key": "half", "value": "1"})
        raise LookupError("changed its mind")

    with pytest.raises(LookupError):
        await db.write(half_done)
    async with db.reading() as read:
        assert await read(count_settings) == 0


async def test_closing_waits_for_a_scan_whose_caller_was_cancelled(
    migrated_sqlite_url: str,
) -> None:
    # Closing the connection under the running statement would crash the process.
    db = Database(migrated_sqlite_url, DatabaseLimits(statement_timeout_seconds=0.3))
    started, finished = threading.Event(), threading.Event()

    def scan(connection: Connection) -> int:
        started.set()
        try:
            return int(connection.execute(text(ENDLESS)).scalar_one())
        finally:
            finished.set()

    reading = asyncio.create_task(db.read(scan))
    assert await asyncio.to_thread(started.wait, 30)
    reading.cancel()
    await db.dispose()

    assert finished.is_set()
