"""Domain layer: what the service and a certificate authority say to each other.

The CA port (`CertificateAuthority` in `domain.ports`) answers requests at once and decides
asynchronously; the service learns each decision by asking for the order's decision log.

Exception tree of the CA boundary::

    CaUnavailable        the CA could not be reached, or did not answer in time
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.model import CertificateDocument, DnsRecord
from domain.statuses import CertificateType, ValidationMethod


class CaUnavailable(Exception):
    """The CA could not be reached; the request may be retried."""

    def __init__(
        self, message: str = "The certificate authority cannot be reached.", retry_after: int = 30
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A new application for the CA. `reference` makes a retried submission idempotent."""

    reference: str
    type: CertificateType
    domains: tuple[str, ...]
    method: ValidationMethod
    organization_name: str | None = None
    organization_country: str | None = None
    # What the applicant asked for; a CA may issue for less (ACME CAs decide the lifetime).
    validity_years: int = 1


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    order_id: str
    records: tuple[DnsRecord, ...]


class WithdrawalAnswer(StrEnum):
    """The CA's immediate answer to a request to stop reviewing an application."""

    ACCEPTED = "ACCEPTED"  # the CA stopped and will decide on the withdrawal later
    ALREADY_ISSUED = "ALREADY_ISSUED"  # the CA had approved the certificate already


@dataclass(frozen=True, slots=True)
class WithdrawalReply:
    answer: WithdrawalAnswer
    issued_at: datetime | None = None
    # With ALREADY_ISSUED: the certificate the CA issued, when it has it at hand.
    document: CertificateDocument | None = None


class DecisionKind(StrEnum):
    """Each asynchronous decision a CA can report about an order."""

    DOMAIN_CHECK_APPROVED = "DOMAIN_CHECK_APPROVED"
    DOMAIN_CHECK_REJECTED = "DOMAIN_CHECK_REJECTED"
    ORGANIZATION_APPROVED = "ORGANIZATION_APPROVED"
    ORGANIZATION_REJECTED = "ORGANIZATION_REJECTED"
    ADDITION_APPROVED = "ADDITION_APPROVED"
    ADDITION_REJECTED = "ADDITION_REJECTED"
    WITHDRAWAL_APPROVED = "WITHDRAWAL_APPROVED"
    WITHDRAWAL_REJECTED = "WITHDRAWAL_REJECTED"
    ISSUED = "ISSUED"
    REVOCATION_APPROVED = "REVOCATION_APPROVED"
    REVOCATION_REJECTED = "REVOCATION_REJECTED"
    DELETION_APPROVED = "DELETION_APPROVED"
    DELETION_REJECTED = "DELETION_REJECTED"


@dataclass(frozen=True, slots=True)
class CaDecision:
    """One entry of an order's decision log; `seq` increases from 1 within an order."""

    order_id: str
    seq: int
    kind: DecisionKind
    at: datetime
    # Set when the decision issued the certificate.
    issued_at: datetime | None = None
    # The validation records of every domain, when an addition was approved.
    records: tuple[DnsRecord, ...] = ()
    message: str | None = None
    # The certificate itself, when the decision issued it.
    document: CertificateDocument | None = None
