"""Server layer: the API's read side over SQL (keyset pages, counts, batch loads).

Implements `domain.reading.CertificateReader` with SQLAlchemy Core. Every call is one
statement, its own transaction (`server.persistence.database.Database.read`: on PostgreSQL a
pooled connection in autocommit; on SQLite loads by key at once on the event loop, and pages,
counts and histories, whose work grows with the data, on a reader thread). Loads of
certificates by id made in the same turn of the event loop, by any number of requests or
subscriptions of one tenant, share one query (`SharedLoads`): a status change fanned out to
1,000 subscribers costs one read, not 1,000.

Keyset paging: a page is "the `limit` certificates after position P" in the order
(sort key, id), with nulls last in both directions. The bound on (key, id) is a row-value
comparison, which both SQLite and PostgreSQL answer from the (tenant_id, key, id) indexes:
page 1,000 costs what page 1 costs.

Search: on SQLite a page or count first asks the trigram index how many hits the search has,
to choose how to read (`server.persistence.search`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    UnaryExpression,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
)

from domain import lifecycle
from domain.model import Certificate, CertificateDocument, CertificateEvent, TenantId, Withdrawal
from domain.reading import (
    NULLABLE_FIELDS,
    CertificateFilter,
    Ordering,
    Page,
    PageRequest,
    Position,
    SortField,
)
from domain.statuses import CertificateStatus
from server.persistence.database import Database
from server.persistence.mapping import (
    certificate_from_row,
    certificates,
    document_from_row,
    documents,
    event_from_row,
    events,
    withdrawal_from_row,
    withdrawals,
)
from server.persistence.repository import certificate_select
from server.persistence.search import search_clauses, tenant_column, use_index
from server.persistence.shared_loads import SharedLoads

SORT_COLUMNS = {
    SortField.CREATED_AT: certificates.c.created_at,
    SortField.UPDATED_AT: certificates.c.updated_at,
    SortField.EXPIRES_AT: certificates.c.expires_at,
    SortField.DOMAIN: certificates.c.domain,
    SortField.NAME: certificates.c.name,
}

Compare = Callable[[Any, Any], ColumnElement[bool]]


def filter_clauses(
    tenant_id: TenantId, where: CertificateFilter, *, search_indexed: bool = False
) -> list[ColumnElement[bool]]:
    """`search_indexed`: the search is narrowed by SQLite's FTS table (`search.use_index`)."""
    status = certificates.c.status
    clauses = [tenant_column(indexed=search_indexed) == tenant_id]
    if where.statuses is None or CertificateStatus.DELETED not in where.statuses:
        clauses.append(status != CertificateStatus.DELETED.value)
    if where.statuses is not None:
        clauses.append(status.in_(sorted(s.value for s in where.statuses)))
    if where.withdrawable is not None:
        withdrawable = sorted(s.value for s in lifecycle.WITHDRAWABLE)
        clauses.append(
            status.in_(withdrawable) if where.withdrawable else status.not_in(withdrawable)
        )
    if where.types is not None:
        clauses.append(certificates.c.type.in_(sorted(t.value for t in where.types)))
    if where.search:
        clauses.extend(search_clauses(where.search, indexed=search_indexed))
    return clauses


def _beyond(field: SortField, position: Position, forwards: bool) -> ColumnElement[bool]:
    """Rows strictly beyond `position` when reading in direction `forwards` (True = ASC).

    Nulls sort last: beyond a non-null key lie the larger keys and every null; beyond a null
    key lie only nulls with a larger id. Reading the other way mirrors both.
    """
    column = SORT_COLUMNS[field]
    id_column = certificates.c.id
    later: Compare = operator.gt if forwards else operator.lt
    key = bindparam(None, position.key, type_=column.type)
    row_beyond = later(tuple_(column, id_column), tuple_(key, bindparam(None, position.id)))
    if field not in NULLABLE_FIELDS:
        return row_beyond
    if position.key is None:
        return and_(column.is_(None), later(id_column, position.id))
    return or_(row_beyond, column.is_(None))


def _before(field: SortField, position: Position, forwards: bool) -> ColumnElement[bool]:
    """Rows strictly before `position` in the order read in direction `forwards`."""
    column = SORT_COLUMNS[field]
    id_column = certificates.c.id
    earlier: Compare = operator.lt if forwards else operator.gt
    key = bindparam(None, position.key, type_=column.type)
    row_before = earlier(tuple_(column, id_column), tuple_(key, bindparam(None, position.id)))
    if field not in NULLABLE_FIELDS:
        return row_before
    if position.key is None:
        return or_(column.is_not(None), earlier(id_column, position.id))
    return row_before


def order_clauses(field: SortField, ascending: bool, *, nulls_first: bool) -> list[Any]:
    column = SORT_COLUMNS[field]
    id_column = certificates.c.id
    key: UnaryExpression[Any] = column.asc() if ascending else column.desc()
    if field in NULLABLE_FIELDS:
        key = key.nulls_first() if nulls_first else key.nulls_last()
    return [key, id_column.asc() if ascending else id_column.desc()]


def page_query(
    tenant_id: TenantId,
    where: CertificateFilter,
    ordering: Ordering,
    request: PageRequest,
    *,
    search_indexed: bool = False,
) -> Select[Any]:
    forwards = not ordering.descending
    clauses = filter_clauses(tenant_id, where, search_indexed=search_indexed)
    if request.after is not None:
        clauses.append(_beyond(ordering.field, request.after, forwards))
    if request.before is not None:
        clauses.append(_before(ordering.field, request.before, forwards))
    # Read from the end: the whole order reversed (so nulls first); the reader flips the page.
    order = (
        order_clauses(ordering.field, not forwards, nulls_first=True)
        if request.from_end
        else order_clauses(ordering.field, forwards, nulls_first=False)
    )
    # One row beyond the page tells whether there is more.
    return certificate_select().where(*clauses).order_by(*order).limit(request.limit + 1)


class SqlCertificateReader:
    """`search_index`: SQLite answers searches from its FTS table where that is cheaper
    (`server.persistence.search`); off, every search reads the tenant in order."""

    def __init__(self, db: Database, *, search_index: bool = True) -> None:
        self._db = db
        self._search_index = search_index
        self._shared_certificates = SharedLoads[TenantId](self._certificate_rows)

    async def _rows(self, query: Select[Any], *, by_key: bool = False) -> Sequence[RowMapping]:
        def rows(connection: Connection) -> Sequence[RowMapping]:
            return connection.execute(query).mappings().all()

        return await self._db.read(rows, by_key=by_key)

    def _search_indexed(self, connection: Connection, where: CertificateFilter) -> bool:
        # Two statements, each its own snapshot: a write in between can change only which way
        # the page is read, never what it holds (the LIKE decides that either way).
        return bool(self._search_index and where.search and use_index(connection, where.search))

    async def page(
        self,
        tenant_id: TenantId,
        where: CertificateFilter,
        ordering: Ordering,
        request: PageRequest,
    ) -> Page:
        def read(connection: Connection) -> Sequence[RowMapping]:
            indexed = self._search_indexed(connection, where)
            query = page_query(tenant_id, where, ordering, request, search_indexed=indexed)
            return connection.execute(query).mappings().all()

        rows = await self._db.read(read)
        found = [certificate_from_row(row) for row in rows[: request.limit]]
        if request.from_end:
            found.reverse()
        return Page(certificates=found, has_more=len(rows) > request.limit)

    async def count(self, tenant_id: TenantId, where: CertificateFilter) -> int:
        def count(connection: Connection) -> int:
            clauses = filter_clauses(
                tenant_id, where, search_indexed=self._search_indexed(connection, where)
            )
            query = select(func.count()).select_from(certificates).where(*clauses)
            return int(connection.execute(query).scalar_one())

        return await self._db.read(count)

    async def certificates(
        self, tenant_id: TenantId, ids: Sequence[str]
    ) -> Mapping[str, Certificate]:
        if not ids:
            return {}
        rows = await self._shared_certificates.load(tenant_id, ids)
        return {row["id"]: certificate_from_row(row) for row in rows}

    async def _certificate_rows(self, tenant_id: TenantId, ids: list[str]) -> Sequence[RowMapping]:
        # At most `MAX_SHARED_KEYS` primary keys.
        return await self._rows(
            certificate_select().where(
                certificates.c.tenant_id == tenant_id, certificates.c.id.in_(ids)
            ),
            by_key=True,
        )

    async def withdrawals(
        self, tenant_id: TenantId, ids: Sequence[str]
    ) -> Mapping[str, Withdrawal]:
        if not ids:
            return {}
        rows = await self._rows(
            select(withdrawals)
            .join(certificates, certificates.c.id == withdrawals.c.certificate_id)
            .where(certificates.c.tenant_id == tenant_id, withdrawals.c.id.in_(sorted(set(ids)))),
            by_key=True,
        )
        loaded = (withdrawal_from_row(row) for row in rows)
        return {w.id: w for w in loaded if w is not None}

    async def events(
        self, tenant_id: TenantId, certificate_ids: Sequence[str]
    ) -> Mapping[str, Sequence[CertificateEvent]]:
        if not certificate_ids:
            return {}
        rows = await self._rows(
            select(events)
            .join(certificates, certificates.c.id == events.c.certificate_id)
            .where(
                certificates.c.tenant_id == tenant_id,
                events.c.certificate_id.in_(sorted(set(certificate_ids))),
            )
            .order_by(events.c.certificate_id, events.c.version)
        )
        history: dict[str, list[CertificateEvent]] = {}
        for row in rows:
            history.setdefault(row["certificate_id"], []).append(event_from_row(row))
        return history

    async def documents(
        self, tenant_id: TenantId, certificate_ids: Sequence[str]
    ) -> Mapping[str, CertificateDocument]:
        if not certificate_ids:
            return {}
        rows = await self._rows(
            select(documents)
            .join(certificates, certificates.c.id == documents.c.certificate_id)
            .where(
                certificates.c.tenant_id == tenant_id,
                documents.c.certificate_id.in_(sorted(set(certificate_ids))),
            ),
            # One document per certificate.
            by_key=True,
        )
        return {row["certificate_id"]: document_from_row(row) for row in rows}
