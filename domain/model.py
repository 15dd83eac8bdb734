"""Domain layer: the certificate aggregate, its withdrawal and its event history."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple, NewType

from domain.lifecycle import available_actions, is_allowed
from domain.statuses import (
    CertificateAction,
    CertificateStatus,
    CertificateType,
    DomainType,
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


class TransitionRefused(Exception):
    """A code path asked for a status change that the transition table does not hold (a bug)."""


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


@dataclass(slots=True)
class Certificate:
    """One certificate and its application. Every change goes through `_move`."""

    id: CertificateId
    tenant_id: TenantId
    name: str
    type: CertificateType
    domain_type: DomainType
    brand: str
    domain_quota: int
    validity_years: int
    status: CertificateStatus
    version: int
    created_at: datetime
    updated_at: datetime
    domain: str | None = None
    additional_domains: tuple[str, ...] = ()
    domain_validation: DomainValidation | None = None
    organization: Organization | None = None
    last_withdrawal: Withdrawal | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    # The CA's reference for the current application, and how far its decisions were applied.
    ca_order_id: str | None = None
    ca_cursor: int = 0
    # Domains the CA is reviewing for addition, and where an interrupted review returns to.
    pending_domains: tuple[str, ...] = ()
    addition_return_status: CertificateStatus | None = None
    deletion_return_status: CertificateStatus | None = None
    # Changes made since the aggregate was loaded, for the repository to write.
    new_events: list[CertificateEvent] = field(default_factory=list)
    withdrawal_changed: bool = False
    # The issued certificate, when this change issued it (stored beside the aggregate).
    new_document: CertificateDocument | None = None

    @classmethod
    def create(
        cls,
        *,
        tenant_id: TenantId,
        name: str,
        type: CertificateType,
        domain_type: DomainType,
        brand: str,
        domain_quota: int,
        validity_years: int,
        now: datetime,
    ) -> Certificate:
        certificate = cls(
            id=CertificateId(new_id()),
            tenant_id=tenant_id,
            name=name,
            type=type,
            domain_type=domain_type,
            brand=brand,
            domain_quota=domain_quota,
            validity_years=validity_years,
            status=CertificateStatus.PENDING_APPLICATION,
            version=0,
            created_at=now,
            updated_at=now,
        )
        certificate._record(
            EventKind.CREATED, None, CertificateStatus.PENDING_APPLICATION, now, None
        )
        return certificate

    # ---- derived views

    @property
    def domains(self) -> tuple[str, ...]:
        return ((self.domain,) if self.domain else ()) + self.additional_domains

    @property
    def available_actions(self) -> list[CertificateAction]:
        return available_actions(
            self.status, self.domain_type, len(self.domains), self.domain_quota
        )

    def allows(self, action: CertificateAction) -> bool:
        return action in self.available_actions

    # ---- the one place a status changes

    def _move(
        self, kind: EventKind, target: CertificateStatus, now: datetime, message: str | None = None
    ) -> None:
        if not is_allowed(kind, self.status, target):
            raise TransitionRefused(f"{kind}: {self.status} -> {target} is not in the table")
        self._record(kind, self.status, target, now, message)

    def _record(
        self,
        kind: EventKind,
        source: CertificateStatus | None,
        target: CertificateStatus,
        now: datetime,
        message: str | None,
    ) -> None:
        self.version += 1
        self.status = target
        self.updated_at = now
        self.new_events.append(
            CertificateEvent(
                id=new_id(),
                certificate_id=self.id,
                version=self.version,
                kind=kind,
                from_status=source,
                to_status=target,
                at=now,
                message=message,
            )
        )

    def _set_withdrawal(self, withdrawal: Withdrawal) -> None:
        self.last_withdrawal = withdrawal
        self.withdrawal_changed = True

    # ---- user actions (the service checked `allows` and the inputs first)

    def apply(
        self,
        *,
        domain: str,
        additional_domains: tuple[str, ...],
        method: ValidationMethod,
        organization: Organization | None,
        records: tuple[DnsRecord, ...],
        ca_order_id: str,
        now: datetime,
    ) -> None:
        self.domain = domain
        self.additional_domains = additional_domains
        self.domain_validation = DomainValidation(method=method, records=records)
        self.organization = organization
        self.ca_order_id = ca_order_id
        self.ca_cursor = 0
        self.pending_domains = ()
        self.issued_at = self.expires_at = None
        self._move(EventKind.APPLIED, CertificateStatus.PENDING_DOMAIN_VERIFICATION, now)

    def request_domain_verification(self, now: datetime) -> None:
        self._move(
            EventKind.DOMAIN_VERIFICATION_REQUESTED,
            CertificateStatus.PENDING_DOMAIN_VERIFICATION,
            now,
            "The CA was asked to check the domain validation records.",
        )

    def add_domains(self, domains: tuple[str, ...], now: datetime) -> None:
        self.pending_domains = domains
        self.addition_return_status = self.status
        self._move(
            EventKind.DOMAINS_ADDED,
            CertificateStatus.CA_VERIFYING_DOMAIN_ADDITION,
            now,
            "Added: " + ", ".join(domains),
        )

    def _new_withdrawal(self, now: datetime) -> Withdrawal:
        return Withdrawal(
            id=WithdrawalId(new_id()),
            certificate_id=self.id,
            status=WithdrawalStatus.PENDING,
            previous_status=self.status,
            requested_at=now,
        )

    def request_withdrawal(self, now: datetime) -> Withdrawal:
        withdrawal = self._new_withdrawal(now)
        self._set_withdrawal(withdrawal)
        self._move(EventKind.WITHDRAWAL_REQUESTED, CertificateStatus.CA_VERIFYING_WITHDRAWAL, now)
        return withdrawal

    def request_revocation(self, reason: str | None, now: datetime) -> None:
        self._move(
            EventKind.REVOCATION_REQUESTED, CertificateStatus.CA_VERIFYING_REVOCATION, now, reason
        )

    def delete_at_once(self, now: datetime) -> None:
        self._move(EventKind.DELETED, CertificateStatus.DELETED, now)

    def request_deletion(self, now: datetime) -> None:
        self.deletion_return_status = self.status
        self._move(EventKind.DELETION_REQUESTED, CertificateStatus.CA_VERIFYING_DELETION, now)

    # ---- CA outcomes

    def issue(
        self,
        kind: EventKind,
        issued_at: datetime,
        now: datetime,
        message: str | None,
        document: CertificateDocument | None = None,
    ) -> None:
        """The CA issued the certificate (after a check, or on its own).

        With the certificate itself at hand, its validity is the truth: an ACME CA decides the
        lifetime (Let's Encrypt: 90 days) whatever `validity_years` asked for."""
        if document is not None:
            self.issued_at, self.expires_at = document.not_before, document.not_after
            self.new_document = document
        else:
            self.issued_at = issued_at
            self.expires_at = add_years(issued_at, self.validity_years)
        self.pending_domains = ()
        if self.domain_validation and self.domain_validation.verified_at is None:
            self.domain_validation = replace(self.domain_validation, verified_at=issued_at)
        if self.organization and self.organization.verified_at is None:
            self.organization = replace(self.organization, verified_at=issued_at)
        self._move(kind, CertificateStatus.ISSUED, now, message)

    def domain_verified(self, now: datetime) -> None:
        assert self.domain_validation is not None
        self.domain_validation = replace(self.domain_validation, verified_at=now)
        self._move(
            EventKind.DOMAIN_VERIFIED, CertificateStatus.PENDING_ORGANIZATION_VERIFICATION, now
        )

    def reject_application(self, message: str | None, now: datetime) -> None:
        self.pending_domains = ()
        self._move(EventKind.REJECTED, CertificateStatus.REJECTED, now, message)

    def domain_addition_approved(self, records: tuple[DnsRecord, ...], now: datetime) -> None:
        self.additional_domains = self.additional_domains + self.pending_domains
        self.pending_domains = ()
        self.addition_return_status = None
        if self.domain_validation is not None:
            self.domain_validation = replace(
                self.domain_validation, records=records, verified_at=None
            )
        self._move(
            EventKind.DOMAIN_ADDITION_APPROVED, CertificateStatus.PENDING_DOMAIN_VERIFICATION, now
        )

    def domain_addition_rejected(self, now: datetime) -> None:
        target = self.addition_return_status or CertificateStatus.PENDING_DOMAIN_VERIFICATION
        self.pending_domains = ()
        self.addition_return_status = None
        self._move(
            EventKind.DOMAIN_ADDITION_REJECTED, target, now, "The CA refused the added domains."
        )

    def withdrawal_succeeded(self, now: datetime) -> None:
        assert self.last_withdrawal is not None
        self._set_withdrawal(
            replace(self.last_withdrawal, status=WithdrawalStatus.SUCCEEDED, resolved_at=now)
        )
        # The applicant must apply and verify again; domains stay to prefill the form.
        self.domain_validation = None
        self.organization = None
        self.pending_domains = ()
        self.addition_return_status = None
        self.ca_order_id = None
        self.ca_cursor = 0
        self._move(EventKind.WITHDRAWAL_SUCCEEDED, CertificateStatus.PENDING_APPLICATION, now)

    def withdrawal_rejected(self, now: datetime) -> None:
        assert self.last_withdrawal is not None
        self._set_withdrawal(
            replace(
                self.last_withdrawal,
                status=WithdrawalStatus.FAILED,
                failure_reason=WithdrawalFailureReason.CA_REJECTED,
                resolved_at=now,
            )
        )
        self._move(
            EventKind.WITHDRAWAL_FAILED,
            self.last_withdrawal.previous_status,
            now,
            "The CA turned the withdrawal down and resumes its review.",
        )

    def withdrawal_overtaken_by_issue(
        self,
        withdrawal: Withdrawal,
        issued_at: datetime,
        now: datetime,
        document: CertificateDocument | None = None,
    ) -> None:
        """The CA had already approved: the withdrawal fails and the certificate is issued."""
        self._set_withdrawal(
            replace(
                withdrawal,
                status=WithdrawalStatus.FAILED,
                failure_reason=WithdrawalFailureReason.CA_ALREADY_APPROVED,
                resolved_at=now,
            )
        )
        self.issue(
            EventKind.WITHDRAWAL_FAILED,
            issued_at,
            now,
            "The CA had already approved the certificate; the withdrawal failed.",
            document,
        )

    def refuse_withdrawal_as_issued(
        self, issued_at: datetime, now: datetime, document: CertificateDocument | None = None
    ) -> Withdrawal:
        """The CA answered a withdrawal request that it had already approved the certificate."""
        self.withdrawal_overtaken_by_issue(self._new_withdrawal(now), issued_at, now, document)
        assert self.last_withdrawal is not None
        return self.last_withdrawal

    def revoked(self, now: datetime) -> None:
        self._move(EventKind.REVOKED, CertificateStatus.REVOKED, now)

    def revocation_rejected(self, now: datetime) -> None:
        self._move(EventKind.REVOCATION_REJECTED, CertificateStatus.ISSUED, now)

    def deleted(self, now: datetime) -> None:
        self.deletion_return_status = None
        self._move(EventKind.DELETED, CertificateStatus.DELETED, now)

    def deletion_rejected(self, now: datetime) -> None:
        target = self.deletion_return_status or CertificateStatus.ISSUED
        self.deletion_return_status = None
        self._move(EventKind.DELETION_REJECTED, target, now)

    def expire(self, now: datetime) -> None:
        self._move(EventKind.EXPIRED, CertificateStatus.EXPIRED, now)


def add_years(moment: datetime, years: int) -> datetime:
    """Calendar years; 29 February becomes 28 February in a non-leap target year."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)
