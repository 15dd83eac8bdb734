"""Fixtures for server-layer tests: the real service stack over a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.model import Certificate, CertificateId, TenantId
from domain.ports import Clock
from domain.sandbox import Sandbox
from domain.service import CertificateService
from domain.statuses import CertificateStatus
from server.ca.simulated import SimulatedCa
from server.ca.sql_book import SqlOrderBook
from server.clock import SystemClock
from server.events.broker import Broker
from server.persistence.changes import SqlChangeHistory
from server.persistence.database import Database
from server.persistence.tenants import TenantStore
from server.persistence.unit_of_work import SqlUnitOfWorkFactory
from server.worker import CaWorker
from tests.support import drive_named


@dataclass
class Stack:
    db: Database
    service: CertificateService
    ca: SimulatedCa
    sandbox: Sandbox
    broker: Broker
    worker: CaWorker
    tenant: TenantId
    other_tenant: TenantId
    uow: SqlUnitOfWorkFactory

    @property
    def engine(self) -> AsyncEngine:
        """For setting up and checking rows in plain SQL."""
        return self.db.engine

    async def load(self, certificate_id: str) -> Certificate:
        async with self.uow() as uow:
            certificate = await uow.certificates.get_any_tenant(CertificateId(certificate_id))
        assert certificate is not None
        return certificate

    async def drive(
        self, name: str, status: CertificateStatus = CertificateStatus.PENDING_DOMAIN_VERIFICATION
    ) -> CertificateId:
        """A certificate of the first tenant called `name`, taken to `status` (see drive_named)."""
        return await drive_named(self.service, self.sandbox, self.tenant, name, status)


async def build_stack(url: str, clock: Clock | None = None, db: Database | None = None) -> Stack:
    clock = clock or SystemClock()
    db = db or Database(url)
    ca = SimulatedCa(SqlOrderBook(db), clock.now, auto_decide_seconds=0)
    broker = Broker(SqlChangeHistory(db))
    uow = SqlUnitOfWorkFactory(db, clock.now)
    service = CertificateService(uow, ca, clock, broker)
    tenants = TenantStore(db)
    acme = await tenants.ensure_tenant("acme")
    globex = await tenants.ensure_tenant("globex")
    worker = CaWorker(db, service, clock, poll_seconds=0.05)
    return Stack(db, service, ca, Sandbox(uow, ca), broker, worker, acme.id, globex.id, uow)


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[Stack]:
    """The service over each real database (SQLite file and PostgreSQL)."""
    built = await build_stack(db_url)
    yield built
    await built.db.dispose()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A Database over each real database, migrated."""
    db = Database(db_url)
    yield db
    await db.dispose()


@pytest.fixture
async def sqlite_stack(migrated_sqlite_url: str) -> AsyncIterator[Stack]:
    """The service over a real SQLite file, for the many behaviour tests."""
    built = await build_stack(migrated_sqlite_url)
    yield built
    await built.db.dispose()
