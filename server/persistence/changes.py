"""Server layer: the change feed, status changes numbered in the order they were committed.

A status change is an event whose status differs from the one before (CREATED included).
Subscribers resume from a change's feed sequence, not from its time: an event is stamped
before its transaction commits, so two writers a few milliseconds apart can commit in the other
order than they stamped, and a subscriber resuming after the later-stamped one would never be
given the earlier-stamped one committed after it.

What subscribers need of the sequence: once a reader sees number N committed, every smaller
number is committed (or will never be). How each database gives that:

* SQLite has one writer at a time (`BEGIN IMMEDIATE`): an AUTOINCREMENT rowid taken inside the
  write transaction is in commit order as it is.
* PostgreSQL hands out `nextval` when asked, not at commit, so a plain serial column can be
  seen as N+1 while N is still in flight; a reader that moved past N+1 would skip N forever.
  The writer therefore appends to the feed as the very last statements of its transaction,
  under a transaction-level advisory lock on one fixed key (`pg_advisory_xact_lock`): take the
  lock, take the numbers (`INSERT` with the serial default), commit. The lock is released only
  after the commit is visible, so the next writer takes its numbers after this one's are
  committed. Only this tail of a writing transaction is serialized (the writes themselves run
  concurrently); transactions without a status change never take the lock. Deriving the order
  from transaction ids and snapshots (`pg_current_snapshot`) instead would avoid that one
  lock, but readers would have to hold back behind the oldest transaction in flight and
  cursors would become snapshot pairs: much more machinery for one short critical section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, func, insert, select, text

from domain.model import CertificateId, TenantId
from domain.ports import ChangePosition, StatusChange
from domain.statuses import CertificateStatus
from resolvers.context import FeedChange
from server.persistence.database import Database
from server.persistence.mapping import change_feed, events

# The advisory lock every PostgreSQL writer takes to append to the feed ("cgfeed" in ASCII):
# a fixed key of this application's own, so unrelated advisory locks never wait on it.
FEED_LOCK_KEY = 0x6367_6665_6564
_TAKE_FEED_LOCK = text(f"SELECT pg_advisory_xact_lock({FEED_LOCK_KEY})")
_APPEND = insert(change_feed)
_LAST_SEQUENCE = select(func.max(change_feed.c.sequence))


def feed_rows(tenant_id: TenantId, history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The feed rows of the status changes among these event rows (`mapping.event_values`)."""
    return [
        {"tenant_id": tenant_id, "certificate_id": e["certificate_id"], "version": e["version"]}
        for e in history
        if e["from_status"] != e["to_status"]
    ]


def append_to_feed(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Number these status changes: the last statements of their write transaction."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        connection.execute(_TAKE_FEED_LOCK)
    connection.execute(_APPEND, list(rows))


def _feed() -> Select[Any]:
    return select(
        change_feed.c.sequence,
        change_feed.c.tenant_id,
        events.c.certificate_id,
        events.c.version,
        events.c.from_status,
        events.c.to_status,
        events.c.at,
    ).select_from(
        change_feed.join(
            events,
            and_(
                events.c.certificate_id == change_feed.c.certificate_id,
                events.c.version == change_feed.c.version,
            ),
        )
    )


def _entry(row: Any) -> FeedChange:
    change = StatusChange(
        tenant_id=TenantId(row.tenant_id),
        certificate_id=CertificateId(row.certificate_id),
        previous_status=CertificateStatus(row.from_status) if row.from_status else None,
        status=CertificateStatus(row.to_status),
        changed_at=row.at,
        version=row.version,
    )
    return FeedChange(row.sequence, change)


class SqlChangeHistory:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _all(self, query: Select[Any]) -> list[FeedChange]:
        def rows(connection: Connection) -> Sequence[Row[Any]]:
            return connection.execute(query).all()

        return [_entry(row) for row in await self._db.read(rows)]

    async def after(self, tenant_id: TenantId, sequence: int, limit: int) -> list[FeedChange]:
        """The tenant's first `limit` status changes committed after `sequence`."""
        return await self._all(
            _feed()
            .where(change_feed.c.tenant_id == tenant_id, change_feed.c.sequence > sequence)
            .order_by(change_feed.c.sequence)
            .limit(limit)
        )

    async def last_sequence(self) -> int:
        """The feed's latest number (0 while it is empty): every smaller one is committed."""
        # The primary key's last entry: an index lookup.
        last = await self._db.read(lambda c: c.scalar(_LAST_SEQUENCE), by_key=True)
        return int(last or 0)

    async def between(
        self, tenant_ids: Sequence[TenantId], after: int, up_to: int, limit: int
    ) -> list[FeedChange]:
        """The first `limit` status changes of these tenants numbered after `after`, up to
        `up_to` (a number read from `last_sequence`, so nothing below it is still to come)."""
        return await self._all(
            _feed()
            .where(
                change_feed.c.sequence > after,
                change_feed.c.sequence <= up_to,
                change_feed.c.tenant_id.in_(list(tenant_ids)),
            )
            .order_by(change_feed.c.sequence)
            .limit(limit)
        )

    async def sequence_at(self, tenant_id: TenantId, position: ChangePosition) -> int | None:
        """The number of the tenant's status change at `position` (what cursors held before the
        feed had numbers); None when it names no change of the tenant's."""
        query = select(change_feed.c.sequence).where(
            change_feed.c.tenant_id == tenant_id,
            change_feed.c.certificate_id == position.certificate_id,
            change_feed.c.version == position.version,
        )
        # Found by the unique (certificate, version) index.
        found = await self._db.read(lambda c: c.scalar(query), by_key=True)
        return None if found is None else int(found)
