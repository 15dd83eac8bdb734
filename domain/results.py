"""Domain layer: the typed outcomes of every use case (successes and expected errors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from domain.model import Certificate, Withdrawal
from domain.statuses import CertificateStatus, WithdrawalBlockReason

WITHDRAWAL_SUBMITTED = "Request for canceling the application submitted successfully."


@dataclass(frozen=True, slots=True)
class CertificateChanged:
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class WithdrawalSubmitted:
    certificate: Certificate
    withdrawal: Withdrawal
    message: str = WITHDRAWAL_SUBMITTED


@dataclass(frozen=True, slots=True)
class NotFound:
    certificate_id: str
    message: ClassVar[str] = "No certificate with this id."


@dataclass(frozen=True, slots=True)
class InvalidState:
    certificate: Certificate
    allowed: frozenset[CertificateStatus]
    action: str

    @property
    def message(self) -> str:
        return (
            f"Cannot {self.action} a certificate in status {self.certificate.status}; "
            f"allowed in: {', '.join(sorted(self.allowed))}."
        )


@dataclass(frozen=True, slots=True)
class WithdrawalNotAllowed:
    certificate: Certificate
    reason: WithdrawalBlockReason

    @property
    def message(self) -> str:
        what = (
            "deletion" if self.reason is WithdrawalBlockReason.DELETION_REQUESTED else "revocation"
        )
        return f"A {what} has been submitted for this certificate; it can no longer be withdrawn."


@dataclass(frozen=True, slots=True)
class CaAlreadyApproved:
    certificate: Certificate
    withdrawal: Withdrawal
    message: ClassVar[str] = "The CA had already approved this certificate; the withdrawal failed."


@dataclass(frozen=True, slots=True)
class CaUnreachable:
    retry_after_seconds: int
    message: ClassVar[str] = (
        "The certificate authority cannot be reached; nothing was changed. Try again later."
    )


@dataclass(frozen=True, slots=True)
class InvalidInput:
    field: str
    message: str


CreateResult = CertificateChanged | InvalidInput
# Why a change (applying, verifying, adding domains, revoking, deleting) did not happen.
ChangeRefused = NotFound | InvalidState | InvalidInput | CaUnreachable
ChangeResult = CertificateChanged | ChangeRefused
WithdrawResult = (
    WithdrawalSubmitted
    | NotFound
    | InvalidState
    | WithdrawalNotAllowed
    | CaAlreadyApproved
    | CaUnreachable
    | InvalidInput
)
