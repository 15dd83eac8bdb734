"""Server layer: builds and owns one process's parts (engine, CA, broker, worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from domain.ports import CertificateAuthority
from domain.service import CertificateService
from server.broker import Broker
from server.ca.simulated import SimulatedCa
from server.ca.sql_book import SqlOrderBook
from server.clock import SystemClock
from server.db import create_engine
from server.persistence.tenants import TenantStore
from server.persistence.unit_of_work import SqlUnitOfWorkFactory
from server.settings import Settings
from server.worker import CaWorker

log = logging.getLogger(__name__)


class Container:
    def __init__(self, settings: Settings, *, run_background: bool = True) -> None:
        self.settings = settings
        self.clock = SystemClock()
        self.engine = create_engine(settings.database_url)
        self.uow = SqlUnitOfWorkFactory(self.engine, self.clock.now)
        self.broker = Broker()
        self.tenants = TenantStore(self.engine)
        self.sim_ca: SimulatedCa | None = None
        ca: CertificateAuthority
        if settings.ca == "simulated":
            self.sim_ca = SimulatedCa(
                SqlOrderBook(self.engine), self.clock.now, settings.ca_auto_decide_seconds
            )
            ca = self.sim_ca
        else:
            raise ValueError("CERTGRAPH_CA=acme is not available in this build yet")
        self.ca = ca
        self.service = CertificateService(self.uow, ca, self.clock, self.broker)
        self.worker = CaWorker(self.engine, self.service, self.clock, settings.ca_poll_seconds)
        self._run_background = run_background
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self._run_background:
            return
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
        await self.engine.dispose()
