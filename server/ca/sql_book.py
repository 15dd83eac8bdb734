"""Server layer: the simulated CA's durable order book in its own SQL tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from domain.ca import CaDecision, CaUnavailable, DecisionKind
from domain.statuses import CertificateType
from server.ca.decision_log import decisions_after
from server.ca.orders import Review, SimOrder, Stage
from server.ca.x509 import TestRoot, document_from_pem
from server.persistence.database import Database
from server.persistence.mapping import records_from_json, records_to_json
from server.persistence.tables import (
    SimCaDecisionRow,
    SimCaOrderRow,
    SimCaRequestRow,
    SimCaRootRow,
    SimCaSettingRow,
)

T = TypeVar("T")
orders: Table = SimCaOrderRow.__table__  # type: ignore[assignment]
decisions: Table = SimCaDecisionRow.__table__  # type: ignore[assignment]
settings: Table = SimCaSettingRow.__table__  # type: ignore[assignment]
roots: Table = SimCaRootRow.__table__  # type: ignore[assignment]
requests: Table = SimCaRequestRow.__table__  # type: ignore[assignment]
REACHABLE = "reachable"
ROOT = "root"


def _order_from_row(row: Any) -> SimOrder:
    return SimOrder(
        id=row["id"],
        reference=row["reference"],
        type=CertificateType(row["type"]),
        domains=tuple(row["domains"]),
        records=records_from_json(row["records"]),
        stage=Stage(row["stage"]),
        review=Review(row["review"]),
        created_at=row["created_at"],
        suspended_review=Review(row["suspended_review"]),
        pending_domains=tuple(row["pending_domains"]),
        review_started_at=row["review_started_at"],
        issued_at=row["issued_at"],
        last_seq=row["last_seq"],
        validity_years=row["validity_years"],
        certificate_pem=row["certificate_pem"],
        private_key_pem=row["private_key_pem"],
    )


def _order_values(order: SimOrder) -> dict[str, Any]:
    return {
        "id": order.id,
        "reference": order.reference,
        "type": order.type.value,
        "domains": list(order.domains),
        "records": records_to_json(order.records),
        "stage": order.stage.value,
        "review": order.review.value,
        "suspended_review": order.suspended_review.value,
        "pending_domains": list(order.pending_domains),
        "review_started_at": order.review_started_at,
        "issued_at": order.issued_at,
        "last_seq": order.last_seq,
        "created_at": order.created_at,
        "validity_years": order.validity_years,
        "certificate_pem": order.certificate_pem,
        "private_key_pem": order.private_key_pem,
    }


def _decision_from_row(row: Any) -> CaDecision:
    return CaDecision(
        order_id=row["order_id"],
        seq=row["seq"],
        kind=DecisionKind(row["kind"]),
        at=row["at"],
        issued_at=row["issued_at"],
        records=records_from_json(row["records"]),
        message=row["message"],
        document=document_from_pem(row["certificate_pem"]) if row["certificate_pem"] else None,
    )


_REACHABLE = select(settings.c.value).where(settings.c.key == REACHABLE)
_COUNT_CALL = (
    update(requests).where(requests.c.key == bindparam("b_key")).values(calls=requests.c.calls + 1)
)
_LOAD = select(orders).where(orders.c.id == bindparam("b_id")).with_for_update()
# The order, and whether the CA is reachable, in one read.
_LOAD_FOR_REQUEST = _LOAD.add_columns(_REACHABLE.scalar_subquery().label("ca_reachable"))
_ANSWER = select(requests.c.answer).where(requests.c.key == bindparam("b_key"))
_RECORD_REQUEST = insert(requests)
_STORE = update(orders).where(orders.c.id == bindparam("b_id"))


def _load_order(connection: Connection, order_id: str) -> SimOrder | None:
    """The order, locked for the rest of the transaction."""
    row = connection.execute(_LOAD, {"b_id": order_id}).mappings().first()
    return _order_from_row(row) if row else None


def _store_order(connection: Connection, order: SimOrder) -> None:
    """Write back the order's changes and log its new decisions."""
    values = _order_values(order)
    values["b_id"] = values.pop("id")
    connection.execute(_STORE, values)
    if order.new_decisions:
        connection.execute(
            insert(decisions),
            [
                {
                    "order_id": d.order_id,
                    "seq": d.seq,
                    "kind": d.kind.value,
                    "at": d.at,
                    "issued_at": d.issued_at,
                    "records": records_to_json(d.records),
                    "message": d.message,
                    "certificate_pem": d.document.pem if d.document else None,
                }
                for d in order.new_decisions
            ],
        )


class SqlOrderBook:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def reachable(self) -> bool:
        return await self._db.read(lambda c: c.scalar(_REACHABLE), by_key=True) != "0"

    async def set_reachable(self, flag: bool) -> None:
        value = "1" if flag else "0"

        def store(connection: Connection) -> None:
            stored = connection.execute(
                update(settings).where(settings.c.key == REACHABLE).values(value=value)
            )
            if stored.rowcount == 0:
                connection.execute(insert(settings).values(key=REACHABLE, value=value))

        await self._db.write(store)

    async def place(self, order: SimOrder) -> SimOrder:
        try:
            await self._db.write(lambda c: c.execute(insert(orders).values(_order_values(order))))
            return order
        except IntegrityError:
            placed = select(orders).where(orders.c.reference == order.reference)
            row = await self._db.read(lambda c: c.execute(placed).mappings().one(), by_key=True)
            return _order_from_row(row)

    async def change(self, order_id: str, change: Callable[[SimOrder], T]) -> T | None:
        def transaction(connection: Connection) -> T | None:
            order = _load_order(connection, order_id)
            if order is None:
                return None
            result = change(order)
            _store_order(connection, order)
            return result

        return await self._db.write(transaction)

    async def keyed_request(
        self,
        order_id: str,
        key: str,
        operation: str,
        act: Callable[[SimOrder], dict[str, Any]],
        now: datetime,
    ) -> dict[str, Any] | None:
        def request(connection: Connection) -> dict[str, Any] | None:
            bound = {"b_id": order_id, "b_key": key}
            row = connection.execute(_LOAD_FOR_REQUEST, bound).mappings().first()
            reachable = row["ca_reachable"] if row else connection.scalar(_REACHABLE)
            if reachable == "0":
                raise CaUnavailable()
            if row is None:
                return None
            # Read once the order is locked: on PostgreSQL a subquery of the locking statement
            # would see the snapshot from before the wait, not the answer stored meanwhile.
            stored = connection.scalar(_ANSWER, bound)
            if stored is not None:
                connection.execute(_COUNT_CALL, bound)
                return dict(stored)
            order = _order_from_row(row)
            answer = act(order)
            connection.execute(
                _RECORD_REQUEST,
                {
                    "key": key,
                    "order_id": order_id,
                    "operation": operation,
                    "answer": answer,
                    "calls": 1,
                    "created_at": now,
                },
            )
            _store_order(connection, order)
            return answer

        return await self._db.write(request)

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]:
        return await decisions_after(self._db, decisions, cursors, _decision_from_row)

    async def due_reviews(self, started_before: datetime, limit: int) -> list[str]:
        due = (
            select(orders.c.id)
            .where(orders.c.review_started_at <= started_before)
            .order_by(orders.c.review_started_at)
            .limit(limit)
        )
        return await self._db.read(lambda c: list(c.scalars(due)))

    async def root(self, candidate: TestRoot) -> TestRoot:
        stored = select(roots).where(roots.c.name == ROOT)
        row = await self._db.read(lambda c: c.execute(stored).first(), by_key=True)
        if row is None:
            values = {
                "name": ROOT,
                "certificate_pem": candidate.certificate_pem,
                "private_key_pem": candidate.private_key_pem,
                "created_at": datetime.now(UTC),
            }
            try:
                await self._db.write(lambda c: c.execute(insert(roots).values(values)))
                return candidate
            except IntegrityError:
                # Another process made it first: theirs is the root.
                row = await self._db.read(lambda c: c.execute(stored).one(), by_key=True)
        return TestRoot(row.certificate_pem, row.private_key_pem)
