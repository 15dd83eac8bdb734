"""Server layer: the background worker that asks the CA for decisions and expires certificates.

Which certificates to ask about is durable state (`certificates.ca_next_poll_at`), so a crash or
restart at any moment loses nothing: the next process to start claims them again. Claims use
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several processes share the work without overlap.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.ca import CaUnavailable
from domain.model import CertificateId
from domain.ports import Clock
from domain.service import CertificateService
from server.db import is_sqlite
from server.persistence.mapping import certificates, idempotency_keys

log = logging.getLogger(__name__)
# Idempotency keys are promised for at least 24 hours.
KEY_RETENTION = timedelta(hours=48)
MAX_BACKOFF_SECONDS = 30.0


class CaWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        service: CertificateService,
        clock: Clock,
        poll_seconds: float,
        batch_size: int = 200,
    ) -> None:
        self._engine = engine
        self._service = service
        self._clock = clock
        self._poll = timedelta(seconds=poll_seconds)
        self._poll_seconds = poll_seconds
        self._batch = batch_size
        self._sqlite = is_sqlite(str(engine.url))

    async def claim_due(self) -> list[CertificateId]:
        """Take the certificates due for a CA poll and push their next poll back."""
        now = self._clock.now()
        async with self._engine.connect() as connection:
            if self._sqlite:
                connection = await connection.execution_options(sqlite_begin="IMMEDIATE")
            async with connection.begin():
                ids = list(
                    await connection.scalars(
                        select(certificates.c.id)
                        .where(certificates.c.ca_next_poll_at <= now)
                        .order_by(certificates.c.ca_next_poll_at)
                        .limit(self._batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                if ids:
                    await connection.execute(
                        update(certificates)
                        .where(certificates.c.id.in_(ids))
                        .values(ca_next_poll_at=now + self._poll)
                    )
        return [CertificateId(i) for i in ids]

    async def due_expiries(self) -> list[CertificateId]:
        now = self._clock.now()
        async with self._engine.connect() as connection:
            ids = await connection.scalars(
                select(certificates.c.id)
                .where(and_(certificates.c.status == "ISSUED", certificates.c.expires_at <= now))
                .limit(self._batch)
            )
            return [CertificateId(i) for i in ids]

    async def forget_old_keys(self) -> None:
        async with self._engine.connect() as connection:
            if self._sqlite:
                connection = await connection.execution_options(sqlite_begin="IMMEDIATE")
            async with connection.begin():
                await connection.execute(
                    delete(idempotency_keys).where(
                        idempotency_keys.c.created_at < self._clock.now() - KEY_RETENTION
                    )
                )

    async def run_once(self) -> int:
        """One round: poll the CA for every due certificate. Returns how many changed."""
        changed = 0
        while ids := await self.claim_due():
            changed += await self._service.sync_with_ca(ids)
            if len(ids) < self._batch:
                break
        changed += await self._service.expire(await self.due_expiries())
        return changed

    async def run(self) -> None:
        backoff = self._poll_seconds
        rounds = 0
        while True:
            try:
                await self.run_once()
                backoff = self._poll_seconds
                rounds += 1
                if rounds % 1000 == 0:
                    await self.forget_old_keys()
            except CaUnavailable:
                # The claimed certificates come due again after their poll interval.
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                log.warning("CA unreachable; next attempt in %.1f s", backoff)
            except Exception:
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                log.exception("CA worker round failed; next attempt in %.1f s", backoff)
            await asyncio.sleep(backoff)
