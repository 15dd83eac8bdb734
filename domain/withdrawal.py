"""Domain layer: withdrawing an application, the one use case a client may repeat under an
idempotency key (a retry with the same key gets the first answer, and nothing happens twice)."""

from __future__ import annotations

from datetime import datetime

from domain import lifecycle
from domain.ca import WithdrawalAnswer, WithdrawalReply
from domain.model import Certificate, CertificateId, TenantId
from domain.ports import KeyedOperation, UnitOfWork
from domain.results import (
    CaAlreadyApproved,
    InvalidInput,
    WithdrawalNotAllowed,
    WithdrawalSubmitted,
    WithdrawResult,
)
from domain.statuses import CertificateAction
from domain.use_case import Step, UseCase, order_of, refuse

MAX_KEY = 128
OPERATION = KeyedOperation.WITHDRAW_APPLICATION


def settle(
    certificate: Certificate, reply: WithdrawalReply | None, now: datetime
) -> WithdrawalSubmitted | CaAlreadyApproved:
    """The CA's immediate answer decides the change: it stopped its review (the withdrawal is
    submitted and decided later), or it had already approved the certificate."""
    if reply is not None and reply.answer is WithdrawalAnswer.ALREADY_ISSUED:
        failed = certificate.refuse_withdrawal_as_issued(
            reply.issued_at or now, now, reply.document
        )
        return CaAlreadyApproved(certificate, failed)
    return WithdrawalSubmitted(certificate, certificate.request_withdrawal(now))


class Withdrawals(UseCase):
    async def withdraw(
        self, tenant_id: TenantId, certificate_id: str, idempotency_key: str | None = None
    ) -> WithdrawResult:
        key = idempotency_key
        if key is not None and not 1 <= len(key) <= MAX_KEY:
            return InvalidInput(
                "idempotency_key", f"An idempotency key has 1 to {MAX_KEY} characters."
            )

        async def read(uow: UnitOfWork) -> Certificate | WithdrawResult | None:
            # The key's earlier answer and the certificate, in one unit of work.
            replay = await self._replay(uow, tenant_id, certificate_id, key)
            if replay is not None:
                return replay
            return await uow.certificates.get(tenant_id, CertificateId(certificate_id))

        async def rules(
            certificate: Certificate,
        ) -> Step[WithdrawalReply, WithdrawResult] | WithdrawResult:
            blocked = lifecycle.WITHDRAWAL_BLOCKS.get(certificate.status)
            if blocked is not None:
                return WithdrawalNotAllowed(certificate, blocked)
            if not certificate.allows(CertificateAction.WITHDRAW_APPLICATION):
                # A request with the same key may have just won: answer as it was answered.
                async with self._uow() as uow:
                    replay = await self._replay(uow, tenant_id, certificate_id, key)
                return replay or refuse(
                    certificate,
                    CertificateAction.WITHDRAW_APPLICATION,
                    "withdraw the application of",
                )
            return Step(
                settle,
                lambda c, ca_key: self._ca.request_withdrawal(order_of(c), key=ca_key),
                "withdrawal",
                remember=None if key is None else lambda uow, done: remember(uow, key, done),
            )

        return await self._change(tenant_id, certificate_id, rules, read)

    @staticmethod
    async def _replay(
        uow: UnitOfWork, tenant_id: TenantId, certificate_id: str, key: str | None
    ) -> WithdrawalSubmitted | InvalidInput | None:
        if key is None:
            return None
        stored = await uow.idempotency.find(tenant_id, OPERATION, key)
        if stored is None:
            return None
        if stored.certificate_id != certificate_id:
            return InvalidInput(
                "idempotency_key", "This idempotency key was used for another certificate."
            )
        certificate = await uow.certificates.get(tenant_id, stored.certificate_id)
        withdrawal = await uow.certificates.get_withdrawal(stored.withdrawal_id)
        if certificate is None or withdrawal is None:
            return None
        return WithdrawalSubmitted(certificate, withdrawal)


def remember(uow: UnitOfWork, key: str, done: WithdrawResult) -> None:
    """A submitted withdrawal's answer, kept under the client's key with the change itself."""
    if isinstance(done, WithdrawalSubmitted):
        certificate = done.certificate
        uow.idempotency.remember(
            certificate.tenant_id, OPERATION, key, certificate.id, done.withdrawal.id
        )
