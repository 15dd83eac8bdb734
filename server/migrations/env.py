"""Server layer: the Alembic environment, run on a connection server.migrate hands over."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from server.persistence.database import Database
from server.persistence.search import is_schema_object
from server.persistence.tables import Base, UtcDateTime
from server.persistence.time_limits import MIGRATION_LIMITS

target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Revisions must not import application code, which may change after them.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_item=render_item,
        # SQLite cannot ALTER most things in place: later revisions use batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # The search index's tables and index live outside the metadata (migration 0004).
        include_name=is_schema_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    db = Database(url, MIGRATION_LIMITS)
    try:
        await db.write(run_on)
    finally:
        await db.dispose()


def run_offline(url: str) -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    connection = config.attributes.get("connection")
    if context.is_offline_mode():
        assert url is not None
        run_offline(url)
    elif isinstance(connection, Connection):
        run_on(connection)
    else:
        # Called without a connection (e.g. `command.revision(..., autogenerate=True)`).
        assert url is not None
        asyncio.run(run_with_own_engine(url))


main()
