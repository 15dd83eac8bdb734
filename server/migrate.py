"""Server layer: bring a database to the latest schema with Alembic, configured from code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from server.persistence.database import Database
from server.persistence.time_limits import MIGRATION_LIMITS

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any constant will do: it only has to be the same in every process that migrates.
_PG_MIGRATION_LOCK = 0x63657274


def alembic_config(url: str) -> Config:
    """An Alembic configuration without alembic.ini, so it works from any cwd or installed wheel.

    `command.revision(alembic_config(url), autogenerate=True, message=...)` adds a revision.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a `%` in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(url: str) -> None:
    """Upgrade the database to the newest revision; a database already there is left as is."""
    db = Database(url, MIGRATION_LIMITS)
    try:
        # One writer transaction for the whole upgrade (SQLite and PostgreSQL both have
        # transactional DDL).
        await db.write(lambda connection: _upgrade(connection, url))
    finally:
        await db.dispose()


def _upgrade(connection: Connection, url: str) -> None:
    if connection.dialect.name == "postgresql":
        # Two hosts migrating at once take turns; the second one finds nothing to do. (SQLite's
        # BEGIN IMMEDIATE does the same.) Taking the lock before Alembic runs also matters in
        # one process: Alembic's `context` and `op` are module-global.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    config = alembic_config(url)
    # env.py runs on this connection (and inside its transaction) instead of opening its own.
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def is_current(url: str) -> bool:
    """Whether the database is at the newest revision."""
    return await current_revisions(url) == head_revisions()


async def current_revisions(url: str) -> set[str]:
    """The revisions the database is at (empty before the first migration)."""
    db = Database(url, MIGRATION_LIMITS)
    try:
        return await db.read(_current_revisions)
    finally:
        await db.dispose()


def head_revisions() -> set[str]:
    """The newest revisions among the migration scripts (one, unless branches were made)."""
    return set(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def _current_revisions(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())
