"""Domain layer: the sandbox, where a client drives the simulated CA's decisions itself.

Only a server running the simulated CA in sandbox mode has it; the lifecycle use cases know
nothing of it. A decision told to the CA reaches the certificate as a real CA's would: the
worker learns it from the CA's decision log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from domain import lifecycle
from domain.model import Certificate, CertificateId, TenantId
from domain.ports import UnitOfWorkFactory
from domain.results import InvalidState, NotFound
from domain.statuses import CertificateStatus


class SandboxDecision(StrEnum):
    APPROVE = "APPROVE"
    REJECT = "REJECT"
    ISSUE = "ISSUE"


# The statuses in which the simulated CA may be told each decision.
SANDBOX_STATUSES: dict[SandboxDecision, frozenset[CertificateStatus]] = {
    SandboxDecision.APPROVE: lifecycle.CA_PENDING,
    SandboxDecision.REJECT: lifecycle.CA_PENDING,
    SandboxDecision.ISSUE: lifecycle.ISSUABLE,
}


class SandboxCa(Protocol):
    """The controls of the simulated CA that the sandbox drives."""

    async def decide(self, order_id: str, decision: SandboxDecision) -> bool:
        """False when the CA has nothing under review to decide on."""
        ...

    async def set_reachable(self, flag: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class SandboxDecided:
    """The CA decided; `certificate` is as this service knows it until the worker catches up."""

    certificate: Certificate


@dataclass(frozen=True, slots=True)
class NothingToDecide:
    """The certificate's status allows the decision, but the CA's view is ahead of ours: it
    holds nothing under review (it decided already)."""

    certificate: Certificate
    allowed: frozenset[CertificateStatus]
    message: ClassVar[str] = (
        "The simulated CA holds nothing to decide on for this certificate now; "
        "it may have decided already."
    )


SandboxResult = SandboxDecided | NotFound | InvalidState | NothingToDecide


class Sandbox:
    def __init__(self, uow: UnitOfWorkFactory, ca: SandboxCa) -> None:
        self._uow = uow
        self._ca = ca

    async def decide(
        self, tenant_id: TenantId, certificate_id: str, decision: SandboxDecision
    ) -> SandboxResult:
        """Have the simulated CA decide now on what it reviews for this certificate."""
        async with self._uow() as uow:
            certificate = await uow.certificates.get(tenant_id, CertificateId(certificate_id))
        if certificate is None:
            return NotFound(certificate_id)
        allowed = SANDBOX_STATUSES[decision]
        if certificate.status not in allowed or certificate.ca_order_id is None:
            return InvalidState(certificate, allowed, f"{decision.lower()} (sandbox)")
        if not await self._ca.decide(certificate.ca_order_id, decision):
            return NothingToDecide(certificate, allowed)
        return SandboxDecided(certificate)

    async def set_reachable(self, flag: bool) -> None:
        """While unreachable, every call to the simulated CA fails as if the network were down."""
        await self._ca.set_reachable(flag)
