"""Server layer: what the ACME adapter remembers of each order, and its decision log, in SQL.

Each change is a compare-and-set on the order's `phase` and `last_seq`, written with the new
decisions in one short transaction, so two processes polling the same order log each decision
once, and a decision keeps its `seq` across restarts. No network call happens in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from domain.ca import CaDecision, DecisionKind
from domain.model import DnsRecord
from server.ca.decision_log import decisions_after
from server.ca.x509 import document_from_pem
from server.persistence.database import Database
from server.persistence.mapping import records_from_json, records_to_json
from server.persistence.tables import AcmeDecisionRow, AcmeOrderRow

orders: Table = AcmeOrderRow.__table__  # type: ignore[assignment]
decisions: Table = AcmeDecisionRow.__table__  # type: ignore[assignment]


class Phase(StrEnum):
    """certgraph's side of an ACME order."""

    OPEN = "OPEN"  # the challenges wait to be answered and validated
    FINALIZING = "FINALIZING"  # certgraph finalized (or is about to): the CA is issuing
    ISSUED = "ISSUED"  # the certificate is downloaded
    CLOSING = "CLOSING"  # its authorizations are being deactivated, for `closing_for`
    CLOSED = "CLOSED"  # nothing more will happen to it


class Closing(StrEnum):
    """Why an order was closed by certgraph (null: it failed validation or finalization)."""

    WITHDRAWAL = "WITHDRAWAL"
    DELETION = "DELETION"
    REVOCATION = "REVOCATION"


# Where the ACME server is still deciding something certgraph waits for.
FOLLOWED = frozenset({Phase.OPEN, Phase.FINALIZING, Phase.CLOSING})


@dataclass(frozen=True, slots=True)
class AcmeOrder:
    id: str
    reference: str
    url: str
    finalize_url: str
    authorizations: tuple[str, ...]
    domains: tuple[str, ...]
    records: tuple[DnsRecord, ...]
    private_key_pem: str
    csr_pem: str
    phase: Phase
    created_at: datetime
    updated_at: datetime
    closing_for: Closing | None = None
    answered_at: datetime | None = None
    certificate_pem: str | None = None
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """A decision to log; its `seq` is given when it is stored."""

    kind: DecisionKind
    message: str | None = None
    records: tuple[DnsRecord, ...] = ()
    # The chain, when the decision issued the certificate.
    certificate_pem: str | None = None


def _order_from_row(row: Any) -> AcmeOrder:
    return AcmeOrder(
        id=row["id"],
        reference=row["reference"],
        url=row["url"],
        finalize_url=row["finalize_url"],
        authorizations=tuple(row["authorizations"]),
        domains=tuple(row["domains"]),
        records=records_from_json(row["records"]),
        private_key_pem=row["private_key_pem"],
        csr_pem=row["csr_pem"],
        phase=Phase(row["phase"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        closing_for=Closing(row["closing_for"]) if row["closing_for"] else None,
        answered_at=row["answered_at"],
        certificate_pem=row["certificate_pem"],
        last_seq=row["last_seq"],
    )


def _order_values(order: AcmeOrder) -> dict[str, Any]:
    return {
        "id": order.id,
        "reference": order.reference,
        "url": order.url,
        "finalize_url": order.finalize_url,
        "authorizations": list(order.authorizations),
        "domains": list(order.domains),
        "records": records_to_json(order.records),
        "private_key_pem": order.private_key_pem,
        "csr_pem": order.csr_pem,
        "phase": order.phase.value,
        "closing_for": order.closing_for.value if order.closing_for else None,
        "answered_at": order.answered_at,
        "certificate_pem": order.certificate_pem,
        "last_seq": order.last_seq,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def _decision_from_row(row: Any) -> CaDecision:
    pem = row["certificate_pem"]
    return CaDecision(
        order_id=row["order_id"],
        seq=row["seq"],
        kind=DecisionKind(row["kind"]),
        at=row["at"],
        issued_at=row["issued_at"],
        records=records_from_json(row["records"]),
        message=row["message"],
        document=document_from_pem(pem) if pem else None,
    )


class AcmeOrderBook:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _one(self, *where: Any) -> AcmeOrder | None:
        query = select(orders).where(*where)
        row = await self._db.read(lambda c: c.execute(query).mappings().first(), by_key=True)
        return _order_from_row(row) if row else None

    async def get(self, order_id: str) -> AcmeOrder | None:
        return await self._one(orders.c.id == order_id)

    async def by_reference(self, reference: str) -> AcmeOrder | None:
        return await self._one(orders.c.reference == reference)

    async def many(self, order_ids: Sequence[str]) -> list[AcmeOrder]:
        if not order_ids:
            return []
        query = select(orders).where(orders.c.id.in_(sorted(order_ids)))
        rows = await self._db.read(lambda c: c.execute(query).mappings().all())
        return [_order_from_row(row) for row in rows]

    async def add(self, order: AcmeOrder) -> AcmeOrder:
        """Store a new order, or return the one placed first under its reference."""
        try:
            await self._db.write(lambda c: c.execute(insert(orders).values(_order_values(order))))
            return order
        except IntegrityError:
            existing = await self.by_reference(order.reference)
            assert existing is not None
            return existing

    async def save(
        self, order: AcmeOrder, *, was: AcmeOrder, entries: Sequence[Entry] = (), now: datetime
    ) -> bool:
        """Write `order` and log `entries` if the stored order is still `was`; else False."""
        values = _order_values(order)
        del values["id"], values["reference"], values["created_at"]
        values["last_seq"] = was.last_seq + len(entries)
        values["updated_at"] = now
        logged = [
            {
                "order_id": was.id,
                "seq": was.last_seq + number,
                "kind": entry.kind.value,
                "at": now,
                "issued_at": document_from_pem(entry.certificate_pem).not_before
                if entry.certificate_pem
                else None,
                "records": records_to_json(entry.records),
                "message": entry.message,
                "certificate_pem": entry.certificate_pem,
            }
            for number, entry in enumerate(entries, start=1)
        ]
        compare_and_set = (
            update(orders)
            .where(
                orders.c.id == was.id,
                orders.c.phase == was.phase.value,
                orders.c.last_seq == was.last_seq,
                orders.c.url == was.url,
            )
            .values(values)
        )

        def transaction(connection: Connection) -> bool:
            if connection.execute(compare_and_set).rowcount != 1:
                return False
            if logged:
                connection.execute(insert(decisions), logged)
            return True

        return await self._db.write(transaction)

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]:
        return await decisions_after(self._db, decisions, cursors, _decision_from_row)
