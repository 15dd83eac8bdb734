"""Server layer: the background worker that asks the CA for decisions and expires certificates.

Which certificates to ask about is durable state (`certificates.ca_next_poll_at`, written in
the transaction that puts a certificate under CA review): that column is the job queue. A
worker claims due certificates with `FOR UPDATE SKIP LOCKED` (on PostgreSQL several processes
share the work without overlap) by pushing their next poll out by a lease; when it is done it
sets the next poll of those still waiting to one poll interval away. A process killed holding
a claim loses nothing: the lease runs out and another process claims them again. Applying a
decision is a compare-and-set on the certificate's version, so it happens once even then.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import Connection, and_, delete, select, tuple_, update

from domain.ca import CaUnavailable
from domain.model import CertificateId
from domain.ports import Clock
from domain.service import CertificateService
from server.persistence.database import Database
from server.persistence.mapping import certificates, idempotency_keys

log = logging.getLogger(__name__)
# Idempotency keys are promised for at least 24 hours.
KEY_RETENTION = timedelta(hours=48)
MAX_BACKOFF_SECONDS = 30.0
# A claim lasts at least this long, so that a batch is not claimed again while it is worked on.
MIN_LEASE_SECONDS = 5.0
# Old idempotency keys are deleted this many per write, so none holds the write lock long.
KEY_DELETE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Claim:
    """Certificates one worker took to ask the CA about, until `leased_until`."""

    ids: list[CertificateId]
    claimed_at: datetime
    leased_until: datetime


class CaWorker:
    def __init__(
        self,
        db: Database,
        service: CertificateService,
        clock: Clock,
        poll_seconds: float,
        batch_size: int = 100,
    ) -> None:
        self._db = db
        self._service = service
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._lease = timedelta(seconds=max(poll_seconds, MIN_LEASE_SECONDS))
        self._backoff = poll_seconds
        self._batch = batch_size
        self.claimed = Counter(
            "certgraph_ca_jobs_claimed",
            "Certificates this process claimed to ask the CA about.",
            registry=None,
        )
        self.applied = Counter(
            "certgraph_ca_decisions_applied",
            "Certificates this process changed by applying CA decisions.",
            registry=None,
        )
        self.failed_rounds = Counter(
            "certgraph_ca_worker_failed_rounds",
            "Worker rounds that failed (CA unreachable or an error); each backs off.",
            registry=None,
        )

    def collectors(self) -> list[Counter]:
        return [self.claimed, self.applied, self.failed_rounds]

    async def claim_due(self) -> Claim:
        """Take the certificates due for a CA poll, leasing them: their next poll moves out
        by the lease, so no other worker takes them meanwhile."""
        now = self._clock.now()
        leased_until = now + self._lease

        def claim(connection: Connection) -> list[str]:
            ids = list(
                connection.scalars(
                    select(certificates.c.id)
                    .where(certificates.c.ca_next_poll_at <= now)
                    .order_by(certificates.c.ca_next_poll_at)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            )
            if ids:
                connection.execute(
                    update(certificates)
                    .where(certificates.c.id.in_(ids))
                    .values(ca_next_poll_at=leased_until)
                )
            return ids

        ids = await self._db.write(claim)
        self.claimed.inc(len(ids))
        return Claim([CertificateId(i) for i in ids], now, leased_until)

    def _failure_backoff(self) -> float:
        return min(self._backoff * 2, MAX_BACKOFF_SECONDS)

    async def _release(self, claim: Claim, delay_seconds: float) -> None:
        """The claimed certificates still under this lease (nothing changed them) are polled
        again `delay_seconds` after the claim: at a steady pace, however long the round took."""
        release = (
            update(certificates)
            .where(
                certificates.c.id.in_(claim.ids),
                certificates.c.ca_next_poll_at == claim.leased_until,
            )
            .values(ca_next_poll_at=claim.claimed_at + timedelta(seconds=delay_seconds))
        )
        await self._db.write(lambda connection: connection.execute(release))

    async def due_expiries(self) -> list[CertificateId]:
        now = self._clock.now()
        due = (
            select(certificates.c.id)
            .where(and_(certificates.c.status == "ISSUED", certificates.c.expires_at <= now))
            .limit(self._batch)
        )
        ids = await self._db.read(lambda connection: list(connection.scalars(due)))
        return [CertificateId(i) for i in ids]

    async def forget_old_keys(self) -> None:
        """Delete the idempotency keys past their retention, `KEY_DELETE_BATCH` per write: on
        SQLite a write runs on the event loop, so none may grow with the number of keys."""
        keys = idempotency_keys.c
        oldest = (
            select(keys.tenant_id, keys.operation, keys.key)
            .where(keys.created_at < self._clock.now() - KEY_RETENTION)
            .order_by(keys.created_at)
            .limit(KEY_DELETE_BATCH)
        )
        forget = delete(idempotency_keys).where(
            tuple_(keys.tenant_id, keys.operation, keys.key).in_(oldest)
        )
        while True:
            deleted = await self._db.write(lambda c: c.execute(forget).rowcount)
            if deleted < KEY_DELETE_BATCH:
                return

    async def run_once(self) -> int:
        """One round: poll the CA for every due certificate. Returns how many changed."""
        changed = 0
        while True:
            claim = await self.claim_due()
            if not claim.ids:
                break
            try:
                applied = await self._service.sync_with_ca(claim.ids)
            except Exception:
                # Retried with backoff (by any process), not only when the lease runs out.
                await self._release(claim, self._failure_backoff())
                raise
            await self._release(claim, self._poll_seconds)
            self.applied.inc(applied)
            changed += applied
            if len(claim.ids) < self._batch:
                break
        changed += await self._service.expire(await self.due_expiries())
        return changed

    async def run(self) -> None:
        rounds = 0
        while True:
            try:
                await self.run_once()
                self._backoff = self._poll_seconds
                rounds += 1
                if rounds % 1000 == 0:
                    await self.forget_old_keys()
            except CaUnavailable:
                # The claimed certificates come due again after the same backoff.
                self.failed_rounds.inc()
                self._backoff = self._failure_backoff()
                log.warning("CA unreachable; next attempt in %.1f s", self._backoff)
            except Exception:
                self.failed_rounds.inc()
                self._backoff = self._failure_backoff()
                log.exception("CA worker round failed; next attempt in %.1f s", self._backoff)
            await asyncio.sleep(self._backoff)
