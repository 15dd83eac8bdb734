"""Domain layer: the ids and immutable values a certificate is made of (its records,
organization, issued document, events and withdrawals)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, NewType

from domain.statuses import (
    CertificateStatus,
    EventKind,
    ValidationMethod,
    WithdrawalFailureReason,
    WithdrawalStatus,
)

CertificateId = NewType("CertificateId", str)
WithdrawalId = NewType("WithdrawalId", str)
TenantId = NewType("TenantId", str)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class DnsRecord:
    name: str
    type: str
    value: str


@dataclass(frozen=True, slots=True)
class DomainValidation:
    method: ValidationMethod
    records: tuple[DnsRecord, ...]
    verified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Organization:
    name: str
    country: str
    verified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CertificateDocument:
    """The certificate the CA issued, as facts read from its X.509 leaf, and the PEM chain.

    The private key is not part of it: it stays with the CA adapter that made the CSR."""

    pem: str
    serial_number: str
    issuer: str
    subject: str
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...] = ()
    sha256_fingerprint: str = ""


class CertificateEvent(NamedTuple):
    """One step of a certificate's history. Immutable, like the other values here; a named
    tuple rather than a frozen dataclass because a page of history makes hundreds, and a
    frozen dataclass costs several times more to make."""

    id: str
    certificate_id: CertificateId
    # The certificate's version after this event: orders a certificate's history.
    version: int
    kind: EventKind
    from_status: CertificateStatus | None
    to_status: CertificateStatus
    at: datetime
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Withdrawal:
    id: WithdrawalId
    certificate_id: CertificateId
    status: WithdrawalStatus
    previous_status: CertificateStatus
    requested_at: datetime
    failure_reason: WithdrawalFailureReason | None = None
    resolved_at: datetime | None = None


def add_years(moment: datetime, years: int) -> datetime:
    """Calendar years; 29 February becomes 28 February in a non-leap target year."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)
