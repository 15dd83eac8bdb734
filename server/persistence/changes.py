"""Server layer: status changes read back from `certificate_events`, for subscribers.

A status change is an event whose status differs from the one before (CREATED included). The
events table is the durable record of every change, so subscribers can catch up from it, and
processes told about a change by id (PostgreSQL NOTIFY) read it from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, select, tuple_

from domain.model import CertificateId, TenantId
from domain.ports import ChangePosition, StatusChange
from domain.statuses import CertificateStatus
from server.persistence.database import Database
from server.persistence.mapping import certificates, events

# (certificate id, version): the key of one change.
ChangeKey = tuple[str, int]

_ORDER = (events.c.at, events.c.certificate_id, events.c.version)


def _status_changes() -> Select[Any]:
    return (
        select(
            certificates.c.tenant_id,
            events.c.certificate_id,
            events.c.version,
            events.c.from_status,
            events.c.to_status,
            events.c.at,
        )
        .select_from(events.join(certificates, certificates.c.id == events.c.certificate_id))
        .where(events.c.from_status.is_distinct_from(events.c.to_status))
    )


def _change(row: Any) -> StatusChange:
    return StatusChange(
        tenant_id=TenantId(row.tenant_id),
        certificate_id=CertificateId(row.certificate_id),
        previous_status=CertificateStatus(row.from_status) if row.from_status else None,
        status=CertificateStatus(row.to_status),
        changed_at=row.at,
        version=row.version,
    )


class SqlChangeHistory:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def after(
        self, tenant_id: TenantId, position: ChangePosition, limit: int
    ) -> list[StatusChange]:
        """The tenant's first `limit` status changes after `position`, in history order."""
        bound = tuple_(
            bindparam(None, position.changed_at, type_=events.c.at.type),
            bindparam(None, position.certificate_id),
            bindparam(None, position.version),
        )
        query = (
            _status_changes()
            .where(certificates.c.tenant_id == tenant_id, tuple_(*_ORDER) > bound)
            .order_by(*_ORDER)
            .limit(limit)
        )
        return [_change(row) for row in await self._db.read(lambda c: _rows(c, query))]

    async def changes(self, keys: Sequence[ChangeKey]) -> dict[ChangeKey, StatusChange]:
        """The status changes with these keys, of any tenant (keys of no status change: absent)."""
        if not keys:
            return {}
        query = _status_changes().where(
            tuple_(events.c.certificate_id, events.c.version).in_(sorted(set(keys)))
        )
        rows = await self._db.read(lambda c: _rows(c, query))
        return {(row.certificate_id, row.version): _change(row) for row in rows}


def _rows(connection: Connection, query: Select[Any]) -> Sequence[Row[Any]]:
    return connection.execute(query).all()
