"""Server layer: builds and owns one process's parts (database, CA, broker, worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Gauge

from domain.ports import CertificateAuthority, ChangePublisher
from domain.sandbox import Sandbox
from domain.service import CertificateService
from server.ca.simulated import SimulatedCa
from server.ca.sql_book import SqlOrderBook
from server.clock import SystemClock
from server.events.broker import Broker
from server.events.pg_broker import PgChangePublisher
from server.persistence.changes import SqlChangeHistory
from server.persistence.database import Database
from server.persistence.tenants import TenantStore
from server.persistence.unit_of_work import SqlUnitOfWorkFactory
from server.settings import Settings
from server.worker import CaWorker

log = logging.getLogger(__name__)
# How long start-up waits for the LISTEN connection before serving anyway (and saying so).
LISTEN_START_TIMEOUT_SECONDS = 10.0


class Container:
    def __init__(self, settings: Settings, *, run_background: bool = True) -> None:
        self.settings = settings
        self.clock = SystemClock()
        self.db = Database(settings.database_url, settings.database_limits)
        self.uow = SqlUnitOfWorkFactory(self.db, self.clock.now)
        # This process's subscribers, fed from the change feed: on PostgreSQL whenever any
        # process's change is heard (LISTEN/NOTIFY); on SQLite (one process) whenever the service
        # tells the broker of its own.
        self.broker = Broker(SqlChangeHistory(self.db))
        self.pg_changes: PgChangePublisher | None = None
        self.publisher: ChangePublisher = self.broker
        if not self.db.is_sqlite:
            self.pg_changes = PgChangePublisher(self.db, self.broker)
            self.publisher = self.pg_changes
        self.tenants = TenantStore(self.db)
        self.sim_ca: SimulatedCa | None = None
        self.sandbox: Sandbox | None = None
        ca: CertificateAuthority
        if settings.ca == "simulated":
            self.sim_ca = SimulatedCa(
                SqlOrderBook(self.db), self.clock.now, settings.ca_auto_decide_seconds
            )
            ca = self.sim_ca
            self.sandbox = Sandbox(self.uow, self.sim_ca)
        else:
            # Imported only when used: the ACME client (acme, josepy, requests) is ~6 MiB.
            from server.ca.acme import build_acme_ca

            ca = build_acme_ca(settings, self.db, self.clock.now)
        self.ca = ca
        self.service = CertificateService(self.uow, ca, self.clock, self.publisher)
        self.worker = CaWorker(self.db, self.service, self.clock, settings.ca_poll_seconds)
        self._run_background = run_background
        self._tasks: list[asyncio.Task[None]] = []

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Expose the worker's and the change feed's counters with the app's metrics."""
        subscriptions = Gauge(
            "certgraph_subscriptions",
            "Status-change subscriptions open on this process.",
            registry=registry,
        )
        subscriptions.set_function(lambda: self.broker.subscriber_count())
        for collector in self.worker.collectors():
            registry.register(collector)
        if self.pg_changes is not None:
            for collector in self.pg_changes.collectors():
                registry.register(collector)

    async def start(self) -> None:
        if not self._run_background:
            return
        if self.pg_changes is not None:
            self._tasks.append(asyncio.create_task(self.pg_changes.run(), name="pg-changes"))
            # Serve once this process hears every change, so that no subscriber misses one.
            try:
                async with asyncio.timeout(LISTEN_START_TIMEOUT_SECONDS):
                    await self.pg_changes.listening.wait()
            except TimeoutError:
                log.warning("not yet listening for changes; subscribers may miss some until then")
        if self.settings.worker:
            self._tasks.append(asyncio.create_task(self.worker.run(), name="ca-worker"))
        if self.sim_ca is not None and self.settings.ca_auto_decide_seconds > 0:
            interval = min(1.0, self.settings.ca_auto_decide_seconds / 2)
            self._tasks.append(
                asyncio.create_task(self.sim_ca.run_auto_decide(interval), name="simca-decide")
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.db.dispose()
