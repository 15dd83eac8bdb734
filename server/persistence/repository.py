"""Server layer: the certificate repository and idempotency keys over a SQLAlchemy connection.

Reads run through the unit of work's reader (`database.reading`). Changes are queued as writes
(functions of a connection) that the unit of work runs together, in one transaction, when it
commits; the status changes among them are queued for the change feed, which that transaction
appends to last (`server.persistence.changes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from domain import lifecycle
from domain.model import Certificate, CertificateId, TenantId, Withdrawal, WithdrawalId
from server.persistence.changes import feed_rows
from server.persistence.database import Reader
from server.persistence.mapping import (
    WITHDRAWAL_COLUMNS,
    certificate_from_row,
    certificate_values,
    certificates,
    document_values,
    documents,
    event_values,
    events,
    idempotency_keys,
    withdrawal_from_row,
    withdrawal_values,
    withdrawals,
)

# A queued change: run in the commit's transaction; raises `StaleWrite` to roll it all back.
Write = Callable[[Connection], None]


class StaleWrite(Exception):
    """A compare-and-set found the row changed meanwhile, or an idempotency key was taken."""


def certificate_select() -> Select[tuple[object, ...]]:
    """Certificates with their last withdrawal, in one query."""
    return select(certificates, *WITHDRAWAL_COLUMNS).select_from(
        certificates.outerjoin(withdrawals, withdrawals.c.id == certificates.c.last_withdrawal_id)
    )


# The hot statements, built once (SQLAlchemy then finds their compiled form without rebuilding
# and hashing them per call); values come as parameters.
_GET = certificate_select().where(
    certificates.c.id == bindparam("b_id"), certificates.c.tenant_id == bindparam("b_tenant")
)
_COMPARE_AND_SET = update(certificates).where(
    certificates.c.id == bindparam("b_id"), certificates.c.version == bindparam("b_expected")
)
_FIND_KEY = select(idempotency_keys.c.certificate_id, idempotency_keys.c.withdrawal_id).where(
    idempotency_keys.c.tenant_id == bindparam("b_tenant"),
    idempotency_keys.c.operation == bindparam("b_operation"),
    idempotency_keys.c.key == bindparam("b_key"),
)


def _upsert_withdrawal(insert_into: Callable[[Table], Any]) -> Insert:
    statement = insert_into(withdrawals)
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[withdrawals.c.id],
        set_={c.name: statement.excluded[c.name] for c in withdrawals.c if c.name != "id"},
    )


# Statements each dialect spells its own way (INSERT ... ON CONFLICT), by dialect name.
_UPSERT_WITHDRAWAL = {
    "sqlite": _upsert_withdrawal(sqlite.insert),
    "postgresql": _upsert_withdrawal(postgresql.insert),
}
_REMEMBER_KEY = {
    "sqlite": sqlite.insert(idempotency_keys).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(idempotency_keys).on_conflict_do_nothing(),
}


_INSERT_CERTIFICATE = insert(certificates)
_INSERT_EVENTS = insert(events)
_INSERT_DOCUMENT = insert(documents)


def _write_history(connection: Connection, history: list[dict[str, Any]]) -> None:
    if history:
        connection.execute(_INSERT_EVENTS, history)


def _certificate(row: Any) -> Certificate | None:
    return certificate_from_row(row) if row else None


class SqlCertificateRepository:
    def __init__(
        self, read: Reader | None, now: datetime, writes: list[Write], feed: list[dict[str, Any]]
    ) -> None:
        self._read = read
        self._now = now
        self._writes = writes
        self._feed = feed

    @property
    def _reader(self) -> Reader:
        assert self._read is not None, "reads need a unit of work opened for reading"
        return self._read

    async def get(self, tenant_id: TenantId, certificate_id: CertificateId) -> Certificate | None:
        bound = {"b_id": certificate_id, "b_tenant": tenant_id}
        return await self._reader(
            lambda connection: _certificate(connection.execute(_GET, bound).mappings().first()),
            by_key=True,
        )

    async def get_many_any_tenant(
        self, certificate_ids: Sequence[CertificateId]
    ) -> list[Certificate]:
        if not certificate_ids:
            return []
        query = certificate_select().where(certificates.c.id.in_(list(certificate_ids)))
        return await self._reader(
            lambda connection: [
                certificate_from_row(row) for row in connection.execute(query).mappings()
            ]
        )

    async def get_any_tenant(self, certificate_id: CertificateId) -> Certificate | None:
        query = certificate_select().where(certificates.c.id == certificate_id)
        return await self._reader(
            lambda connection: _certificate(connection.execute(query).mappings().first()),
            by_key=True,
        )

    async def get_withdrawal(self, withdrawal_id: WithdrawalId) -> Withdrawal | None:
        query = select(withdrawals).where(withdrawals.c.id == withdrawal_id)

        def read(connection: Connection) -> Withdrawal | None:
            row = connection.execute(query).mappings().first()
            return withdrawal_from_row(row) if row else None

        return await self._reader(read, by_key=True)

    def _next_poll(self, certificate: Certificate) -> datetime | None:
        # Anything the CA still reviews is due for a poll now; the worker spaces them out.
        return self._now if certificate.status in lifecycle.CA_PENDING else None

    def add(self, certificate: Certificate) -> None:
        row = certificate_values(certificate, self._next_poll(certificate))
        history = [event_values(event) for event in certificate.new_events]
        self._feed.extend(feed_rows(certificate.tenant_id, history))

        def write(connection: Connection) -> None:
            connection.execute(_INSERT_CERTIFICATE, row)
            _write_history(connection, history)

        self._writes.append(write)

    def save(self, certificate: Certificate, expected_version: int) -> None:
        # Everything is read off the certificate now: the write runs later, maybe elsewhere.
        values = certificate_values(certificate, self._next_poll(certificate))
        del values["id"], values["tenant_id"], values["created_at"]
        values.update(b_id=certificate.id, b_expected=expected_version)
        last = certificate.last_withdrawal
        withdrawal = withdrawal_values(last) if certificate.withdrawal_changed and last else None
        document = (
            document_values(certificate.id, certificate.new_document)
            if certificate.new_document is not None
            else None
        )
        history = [event_values(event) for event in certificate.new_events]
        self._feed.extend(feed_rows(certificate.tenant_id, history))

        def write(connection: Connection) -> None:
            if connection.execute(_COMPARE_AND_SET, values).rowcount != 1:
                raise StaleWrite()
            if withdrawal is not None:
                # New (requested, or refused as issued) or resolved: one statement either way.
                connection.execute(_UPSERT_WITHDRAWAL[connection.dialect.name], withdrawal)
            if document is not None:
                # One document per certificate: the one it was last issued with.
                connection.execute(
                    delete(documents).where(documents.c.certificate_id == certificate.id)
                )
                connection.execute(_INSERT_DOCUMENT, document)
            _write_history(connection, history)

        self._writes.append(write)


@dataclass(frozen=True, slots=True)
class StoredWithdrawal:
    certificate_id: CertificateId
    withdrawal_id: WithdrawalId


class SqlIdempotencyKeys:
    def __init__(self, read: Reader | None, now: datetime, writes: list[Write]) -> None:
        self._read = read
        self._now = now
        self._writes = writes

    async def find(self, tenant_id: TenantId, operation: str, key: str) -> StoredWithdrawal | None:
        assert self._read is not None, "reads need a unit of work opened for reading"
        bound = {"b_tenant": tenant_id, "b_operation": operation, "b_key": key}
        row = await self._read(
            lambda connection: connection.execute(_FIND_KEY, bound).first(), by_key=True
        )
        if row is None:
            return None
        return StoredWithdrawal(CertificateId(row[0]), WithdrawalId(row[1]))

    def remember(
        self,
        tenant_id: TenantId,
        operation: str,
        key: str,
        certificate_id: CertificateId,
        withdrawal_id: WithdrawalId,
    ) -> None:
        row = {
            "tenant_id": tenant_id,
            "operation": operation,
            "key": key,
            "certificate_id": certificate_id,
            "withdrawal_id": withdrawal_id,
            "created_at": self._now,
        }

        def write(connection: Connection) -> None:
            if connection.execute(_REMEMBER_KEY[connection.dialect.name], row).rowcount != 1:
                raise StaleWrite()

        self._writes.append(write)
