"""Server layer: the certificate repository and idempotency keys over a SQLAlchemy connection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import lifecycle
from domain.model import Certificate, CertificateId, TenantId, Withdrawal, WithdrawalId
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


def certificate_select() -> Select[tuple[object, ...]]:
    """Certificates with their last withdrawal, in one query."""
    return select(certificates, *WITHDRAWAL_COLUMNS).select_from(
        certificates.outerjoin(withdrawals, withdrawals.c.id == certificates.c.last_withdrawal_id)
    )


class SqlCertificateRepository:
    def __init__(self, connection: AsyncConnection, now: datetime) -> None:
        self._connection = connection
        self._now = now

    async def get(self, tenant_id: TenantId, certificate_id: CertificateId) -> Certificate | None:
        row = (
            (
                await self._connection.execute(
                    certificate_select().where(
                        certificates.c.id == certificate_id, certificates.c.tenant_id == tenant_id
                    )
                )
            )
            .mappings()
            .first()
        )
        return certificate_from_row(row) if row else None

    async def get_many_any_tenant(
        self, certificate_ids: Sequence[CertificateId]
    ) -> list[Certificate]:
        if not certificate_ids:
            return []
        rows = await self._connection.execute(
            certificate_select().where(certificates.c.id.in_(list(certificate_ids)))
        )
        return [certificate_from_row(row) for row in rows.mappings()]

    async def get_any_tenant(self, certificate_id: CertificateId) -> Certificate | None:
        row = (
            (
                await self._connection.execute(
                    certificate_select().where(certificates.c.id == certificate_id)
                )
            )
            .mappings()
            .first()
        )
        return certificate_from_row(row) if row else None

    async def get_withdrawal(self, withdrawal_id: WithdrawalId) -> Withdrawal | None:
        row = (
            (
                await self._connection.execute(
                    select(withdrawals).where(withdrawals.c.id == withdrawal_id)
                )
            )
            .mappings()
            .first()
        )
        return withdrawal_from_row(row) if row else None

    def _next_poll(self, certificate: Certificate) -> datetime | None:
        # Anything the CA still reviews is due for a poll now; the worker spaces them out.
        return self._now if certificate.status in lifecycle.CA_PENDING else None

    async def add(self, certificate: Certificate) -> None:
        await self._connection.execute(
            insert(certificates).values(
                certificate_values(certificate, self._next_poll(certificate))
            )
        )
        await self._write_history(certificate)

    async def save(self, certificate: Certificate, expected_version: int) -> bool:
        values = certificate_values(certificate, self._next_poll(certificate))
        del values["id"], values["tenant_id"], values["created_at"]
        result = await self._connection.execute(
            update(certificates)
            .where(
                and_(
                    certificates.c.id == certificate.id, certificates.c.version == expected_version
                )
            )
            .values(values)
        )
        if result.rowcount != 1:
            return False
        if certificate.withdrawal_changed and certificate.last_withdrawal is not None:
            await self._save_withdrawal(certificate.last_withdrawal)
        await self._write_document(certificate)
        await self._write_history(certificate)
        return True

    async def _save_withdrawal(self, withdrawal: Withdrawal) -> None:
        values = withdrawal_values(withdrawal)
        result = await self._connection.execute(
            update(withdrawals).where(withdrawals.c.id == withdrawal.id).values(values)
        )
        if result.rowcount == 0:
            await self._connection.execute(insert(withdrawals).values(values))

    async def _write_document(self, certificate: Certificate) -> None:
        if certificate.new_document is not None:
            # One document per certificate: the one it was last issued with.
            await self._connection.execute(
                delete(documents).where(documents.c.certificate_id == certificate.id)
            )
            await self._connection.execute(
                insert(documents).values(document_values(certificate.id, certificate.new_document))
            )

    async def _write_history(self, certificate: Certificate) -> None:
        if certificate.new_events:
            await self._connection.execute(
                insert(events), [event_values(event) for event in certificate.new_events]
            )


@dataclass(frozen=True, slots=True)
class StoredWithdrawal:
    certificate_id: CertificateId
    withdrawal_id: WithdrawalId


class SqlIdempotencyKeys:
    def __init__(self, connection: AsyncConnection, now: datetime) -> None:
        self._connection = connection
        self._now = now

    async def find(self, tenant_id: TenantId, operation: str, key: str) -> StoredWithdrawal | None:
        row = (
            await self._connection.execute(
                select(idempotency_keys.c.certificate_id, idempotency_keys.c.withdrawal_id).where(
                    idempotency_keys.c.tenant_id == tenant_id,
                    idempotency_keys.c.operation == operation,
                    idempotency_keys.c.key == key,
                )
            )
        ).first()
        if row is None:
            return None
        return StoredWithdrawal(CertificateId(row[0]), WithdrawalId(row[1]))

    async def remember(
        self,
        tenant_id: TenantId,
        operation: str,
        key: str,
        certificate_id: CertificateId,
        withdrawal_id: WithdrawalId,
    ) -> bool:
        try:
            async with self._connection.begin_nested():
                await self._connection.execute(
                    insert(idempotency_keys).values(
                        tenant_id=tenant_id,
                        operation=operation,
                        key=key,
                        certificate_id=certificate_id,
                        withdrawal_id=withdrawal_id,
                        created_at=self._now,
                    )
                )
        except IntegrityError:
            return False
        return True
