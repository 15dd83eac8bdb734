"""Domain layer: what the background worker does with certificates the CA holds: apply the
CA's new decisions, and mark issued certificates past their expiry as EXPIRED."""

from __future__ import annotations

from collections.abc import Sequence

from domain import lifecycle
from domain.decisions import apply_decision
from domain.model import CertificateId
from domain.statuses import CertificateStatus
from domain.use_case import UseCase


class CaSync(UseCase):
    async def sync_with_ca(self, certificate_ids: Sequence[CertificateId]) -> int:
        """Apply the CA's new decisions to these certificates; returns how many changed.

        Raises `CaUnavailable` when the CA cannot be asked (the worker backs off)."""
        async with self._uow() as uow:
            loaded = await uow.certificates.get_many_any_tenant(certificate_ids)
        watched = [c for c in loaded if c.ca_order_id and c.status in lifecycle.CA_PENDING]
        if not watched:
            return 0
        news = await self._ca.decisions(
            {c.ca_order_id: c.ca_cursor for c in watched if c.ca_order_id}
        )
        changed = 0
        for certificate in watched:
            decisions = news.get(certificate.ca_order_id or "", ())
            if not decisions:
                continue
            expected = certificate.version
            for decision in decisions:
                apply_decision(certificate, decision, self._clock.now())
                certificate.ca_cursor = decision.seq
            # A lost race means another process applied them; the next round re-reads.
            if await self._save(certificate, expected):
                changed += 1
        return changed

    async def expire(self, certificate_ids: Sequence[CertificateId]) -> int:
        """Mark issued certificates past their expiry as EXPIRED."""
        changed = 0
        async with self._uow() as uow:
            loaded = await uow.certificates.get_many_any_tenant(certificate_ids)
        for certificate in loaded:
            now = self._clock.now()
            if (
                certificate.status is not CertificateStatus.ISSUED
                or certificate.expires_at is None
                or certificate.expires_at > now
            ):
                continue
            expected = certificate.version
            certificate.expire(now)
            if await self._save(certificate, expected):
                changed += 1
        return changed
