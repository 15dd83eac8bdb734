"""Revision 0006 numbers the status changes already recorded, and new ones follow them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, inspect, select, text

from domain.model import CertificateId, TenantId
from domain.statuses import CertificateStatus
from server.migrate import upgrade
from server.persistence.database import Database
from server.persistence.mapping import certificates, change_feed, events
from server.seed import drive_to
from tests.server.conftest import build_stack
from tests.support import alembic

S = CertificateStatus
# Before anything the service stamps in the test.
T0 = datetime(2020, 1, 1, tzinfo=UTC)


def _certificate(certificate_id: str, tenant_id: str) -> dict[str, object]:
    return {
        "id": certificate_id,
        "tenant_id": tenant_id,
        "name": certificate_id,
        "type": "DV",
        "domain_type": "SINGLE",
        "brand": "DigiCert",
        "domain_quota": 1,
        "validity_years": 1,
        "status": "PENDING_DOMAIN_VERIFICATION",
        "version": 2,
        "created_at": T0,
        "updated_at": T0,
        "additional_domains": [],
        "search_text": certificate_id,
        "pending_domains": [],
    }


def _event(certificate_id: str, version: int, from_: str | None, to: str, second: int) -> dict:
    return {
        "id": f"{certificate_id}v{version}",
        "certificate_id": certificate_id,
        "version": version,
        "kind": "CREATED" if from_ is None else "APPLIED",
        "from_status": from_,
        "to_status": to,
        "at": T0 + timedelta(seconds=second),
        "message": None,
    }


async def test_recorded_changes_are_numbered_in_time_order_and_new_ones_follow(
    empty_db_url: str,
) -> None:
    await alembic(empty_db_url, "upgrade", "0003")
    db = Database(empty_db_url)
    engine = db.engine
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :at)"),
                {"at": T0},
            )
            await connection.execute(
                insert(certificates), [_certificate("a", "t1"), _certificate("b", "t1")]
            )
            # Recorded out of time order; b's v3 keeps its status (no change, not numbered).
            await connection.execute(
                insert(events),
                [
                    _event("a", 2, "PENDING_APPLICATION", "PENDING_DOMAIN_VERIFICATION", 30),
                    _event("b", 1, None, "PENDING_APPLICATION", 10),
                    _event("a", 1, None, "PENDING_APPLICATION", 20),
                    _event("b", 2, "PENDING_APPLICATION", "PENDING_DOMAIN_VERIFICATION", 40),
                    _event("b", 3, "PENDING_DOMAIN_VERIFICATION", "PENDING_DOMAIN_VERIFICATION", 5),
                ],
            )

        await upgrade(empty_db_url)

        query = select(change_feed).order_by(change_feed.c.sequence)
        async with engine.connect() as connection:
            numbered = [tuple(row) for row in (await connection.execute(query)).all()]
        assert numbered == [
            (1, "t1", "b", 1),
            (2, "t1", "a", 1),
            (3, "t1", "a", 2),
            (4, "t1", "b", 2),
        ]
    finally:
        await db.dispose()

    # A change committed now comes after them all (PostgreSQL: the sequence moved past them).
    stack = await build_stack(empty_db_url)
    try:
        made = await drive_to(
            stack.service, stack.ca, TenantId("t1"), S.PENDING_APPLICATION, name="c", domain="c.io"
        )
        async with stack.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
    finally:
        await stack.db.dispose()
    assert [(row.sequence, row.certificate_id) for row in rows] == [
        (1, "b"),
        (2, "a"),
        (3, "a"),
        (4, "b"),
        (5, CertificateId(made)),
    ]

    # Down and up again: the feed goes, the events stay, and the feed is rebuilt from them.
    await alembic(empty_db_url, "downgrade", "-1")
    db = Database(empty_db_url)
    engine = db.engine
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            count = await connection.scalar(text("SELECT COUNT(*) FROM certificate_events"))
        assert "change_feed" not in tables and count == 6
        await upgrade(empty_db_url)
        async with engine.connect() as connection:
            again = (await connection.execute(query)).all()
    finally:
        await db.dispose()
    assert [(row.sequence, row.certificate_id) for row in again] == [
        (1, "b"),
        (2, "a"),
        (3, "a"),
        (4, "b"),
        (5, CertificateId(made)),
    ]
