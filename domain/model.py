"""Domain layer: the certificate aggregate, the one place its status changes.

Its parts, ids and events are values in `domain.values`; they are importable from here too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

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
from domain.values import (
    CertificateDocument,
    CertificateEvent,
    CertificateId,
    DnsRecord,
    DomainValidation,
    Organization,
    TenantId,
    Withdrawal,
    WithdrawalId,
    add_years,
    new_id,
)

__all__ = [
    "Certificate",
    "CertificateDocument",
    "CertificateEvent",
    "CertificateId",
    "DnsRecord",
    "DomainValidation",
    "Organization",
    "TenantId",
    "TransitionRefused",
    "Withdrawal",
    "WithdrawalId",
    "add_years",
    "new_id",
]


class TransitionRefused(Exception):
    """A code path asked for a status change that the transition table does not hold (a bug)."""


@dataclass(slots=True)
class Certificate:
    """One certificate and its application. Every status change goes through `_moving` (or
    `_move`), which checks the transition table before anything about the certificate changes:
    a refused transition leaves it exactly as it was."""

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

    @contextmanager
    def _moving(
        self, kind: EventKind, target: CertificateStatus, now: datetime, message: str | None = None
    ) -> Iterator[None]:
        """Check the transition, let the block change the certificate's fields (the status is
        still the source status inside it), then record the move."""
        self._check(kind, target)
        yield
        self._record(kind, self.status, target, now, message)

    def _move(
        self, kind: EventKind, target: CertificateStatus, now: datetime, message: str | None = None
    ) -> None:
        self._check(kind, target)
        self._record(kind, self.status, target, now, message)

    def _check(self, kind: EventKind, target: CertificateStatus) -> None:
        if not is_allowed(kind, self.status, target):
            raise TransitionRefused(f"{kind}: {self.status} -> {target} is not in the table")

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

    def _fail_withdrawal(
        self, withdrawal: Withdrawal, reason: WithdrawalFailureReason, now: datetime
    ) -> None:
        self._set_withdrawal(
            replace(
                withdrawal, status=WithdrawalStatus.FAILED, failure_reason=reason, resolved_at=now
            )
        )

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
        with self._moving(EventKind.APPLIED, CertificateStatus.PENDING_DOMAIN_VERIFICATION, now):
            self.domain = domain
            self.additional_domains = additional_domains
            self.domain_validation = DomainValidation(method=method, records=records)
            self.organization = organization
            self.ca_order_id = ca_order_id
            self.ca_cursor = 0
            self.pending_domains = ()
            self.issued_at = self.expires_at = None

    def request_domain_verification(self, now: datetime) -> None:
        self._move(
            EventKind.DOMAIN_VERIFICATION_REQUESTED,
            CertificateStatus.PENDING_DOMAIN_VERIFICATION,
            now,
            "The CA was asked to check the domain validation records.",
        )

    def add_domains(self, domains: tuple[str, ...], now: datetime) -> None:
        with self._moving(
            EventKind.DOMAINS_ADDED,
            CertificateStatus.CA_VERIFYING_DOMAIN_ADDITION,
            now,
            "Added: " + ", ".join(domains),
        ):
            self.pending_domains = domains
            self.addition_return_status = self.status

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
        with self._moving(
            EventKind.WITHDRAWAL_REQUESTED, CertificateStatus.CA_VERIFYING_WITHDRAWAL, now
        ):
            self._set_withdrawal(withdrawal)
        return withdrawal

    def request_revocation(self, reason: str | None, now: datetime) -> None:
        self._move(
            EventKind.REVOCATION_REQUESTED, CertificateStatus.CA_VERIFYING_REVOCATION, now, reason
        )

    def delete_at_once(self, now: datetime) -> None:
        self._move(EventKind.DELETED, CertificateStatus.DELETED, now)

    def request_deletion(self, now: datetime) -> None:
        with self._moving(
            EventKind.DELETION_REQUESTED, CertificateStatus.CA_VERIFYING_DELETION, now
        ):
            self.deletion_return_status = self.status

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
        with self._moving(kind, CertificateStatus.ISSUED, now, message):
            self._take_issue(issued_at, document)

    def _take_issue(self, issued_at: datetime, document: CertificateDocument | None) -> None:
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

    def domain_verified(self, now: datetime) -> None:
        assert self.domain_validation is not None
        with self._moving(
            EventKind.DOMAIN_VERIFIED, CertificateStatus.PENDING_ORGANIZATION_VERIFICATION, now
        ):
            self.domain_validation = replace(self.domain_validation, verified_at=now)

    def reject_application(self, message: str | None, now: datetime) -> None:
        with self._moving(EventKind.REJECTED, CertificateStatus.REJECTED, now, message):
            self.pending_domains = ()

    def domain_addition_approved(self, records: tuple[DnsRecord, ...], now: datetime) -> None:
        with self._moving(
            EventKind.DOMAIN_ADDITION_APPROVED, CertificateStatus.PENDING_DOMAIN_VERIFICATION, now
        ):
            self.additional_domains = self.additional_domains + self.pending_domains
            self.pending_domains = ()
            self.addition_return_status = None
            if self.domain_validation is not None:
                self.domain_validation = replace(
                    self.domain_validation, records=records, verified_at=None
                )

    def domain_addition_rejected(self, now: datetime) -> None:
        target = self.addition_return_status or CertificateStatus.PENDING_DOMAIN_VERIFICATION
        with self._moving(
            EventKind.DOMAIN_ADDITION_REJECTED, target, now, "The CA refused the added domains."
        ):
            self.pending_domains = ()
            self.addition_return_status = None

    def withdrawal_succeeded(self, now: datetime) -> None:
        assert self.last_withdrawal is not None
        withdrawal = self.last_withdrawal
        with self._moving(
            EventKind.WITHDRAWAL_SUCCEEDED, CertificateStatus.PENDING_APPLICATION, now
        ):
            self._set_withdrawal(
                replace(withdrawal, status=WithdrawalStatus.SUCCEEDED, resolved_at=now)
            )
            # The applicant must apply and verify again; domains stay to prefill the form.
            self.domain_validation = None
            self.organization = None
            self.pending_domains = ()
            self.addition_return_status = None
            self.ca_order_id = None
            self.ca_cursor = 0

    def withdrawal_rejected(self, now: datetime) -> None:
        assert self.last_withdrawal is not None
        withdrawal = self.last_withdrawal
        with self._moving(
            EventKind.WITHDRAWAL_FAILED,
            withdrawal.previous_status,
            now,
            "The CA turned the withdrawal down and resumes its review.",
        ):
            self._fail_withdrawal(withdrawal, WithdrawalFailureReason.CA_REJECTED, now)

    def withdrawal_overtaken_by_issue(
        self,
        withdrawal: Withdrawal,
        issued_at: datetime,
        now: datetime,
        document: CertificateDocument | None = None,
    ) -> None:
        """The CA had already approved: the withdrawal fails and the certificate is issued."""
        with self._moving(
            EventKind.WITHDRAWAL_FAILED,
            CertificateStatus.ISSUED,
            now,
            "The CA had already approved the certificate; the withdrawal failed.",
        ):
            self._fail_withdrawal(withdrawal, WithdrawalFailureReason.CA_ALREADY_APPROVED, now)
            self._take_issue(issued_at, document)

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
        with self._moving(EventKind.DELETED, CertificateStatus.DELETED, now):
            self.deletion_return_status = None

    def deletion_rejected(self, now: datetime) -> None:
        target = self.deletion_return_status or CertificateStatus.ISSUED
        with self._moving(EventKind.DELETION_REJECTED, target, now):
            self.deletion_return_status = None

    def expire(self, now: datetime) -> None:
        self._move(EventKind.EXPIRED, CertificateStatus.EXPIRED, now)
