"""Server layer: conversions between database rows and domain objects."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import Table

from domain.model import (
    Certificate,
    CertificateDocument,
    CertificateEvent,
    CertificateId,
    DnsRecord,
    DomainValidation,
    Organization,
    TenantId,
    Withdrawal,
    WithdrawalId,
)
from domain.statuses import (
    CertificateStatus,
    CertificateType,
    DomainType,
    EventKind,
    ValidationMethod,
    WithdrawalFailureReason,
    WithdrawalStatus,
)
from server.persistence.tables import (
    CertificateDocumentRow,
    CertificateEventRow,
    CertificateRow,
    ChangeFeedRow,
    IdempotencyKeyRow,
    WithdrawalRow,
)

certificates: Table = CertificateRow.__table__  # type: ignore[assignment]
events: Table = CertificateEventRow.__table__  # type: ignore[assignment]
withdrawals: Table = WithdrawalRow.__table__  # type: ignore[assignment]
idempotency_keys: Table = IdempotencyKeyRow.__table__  # type: ignore[assignment]
documents: Table = CertificateDocumentRow.__table__  # type: ignore[assignment]
change_feed: Table = ChangeFeedRow.__table__  # type: ignore[assignment]

# Withdrawal columns as selected beside a certificate row (LEFT JOIN), prefixed `w_`.
E = TypeVar("E", bound=Enum)

WITHDRAWAL_COLUMNS = [column.label(f"w_{column.name}") for column in withdrawals.columns]


def _by_value(enum: type[E]) -> Callable[[str], E]:
    """`enum(value)` as a dict lookup: an Enum call costs several times more, and a page of
    certificates maps thousands of stored values. An unknown value raises KeyError."""
    return {member.value: member for member in enum}.__getitem__


_STATUS = _by_value(CertificateStatus)
_EVENT_KIND = _by_value(EventKind)
_WITHDRAWAL_STATUS = _by_value(WithdrawalStatus)
_FAILURE_REASON = _by_value(WithdrawalFailureReason)
_METHOD = _by_value(ValidationMethod)
_TYPE = _by_value(CertificateType)
_DOMAIN_TYPE = _by_value(DomainType)


def _status(value: str | None) -> CertificateStatus | None:
    return _STATUS(value) if value is not None else None


def records_to_json(records: tuple[DnsRecord, ...]) -> list[dict[str, str]]:
    return [{"name": r.name, "type": r.type, "value": r.value} for r in records]


def records_from_json(data: list[Any] | None) -> tuple[DnsRecord, ...]:
    return tuple(DnsRecord(item["name"], item["type"], item["value"]) for item in data or ())


def withdrawal_from_row(row: Mapping[Any, Any], prefix: str = "") -> Withdrawal | None:
    if row[f"{prefix}id"] is None:
        return None
    reason = row[f"{prefix}failure_reason"]
    return Withdrawal(
        id=WithdrawalId(row[f"{prefix}id"]),
        certificate_id=CertificateId(row[f"{prefix}certificate_id"]),
        status=_WITHDRAWAL_STATUS(row[f"{prefix}status"]),
        previous_status=_STATUS(row[f"{prefix}previous_status"]),
        requested_at=row[f"{prefix}requested_at"],
        failure_reason=_FAILURE_REASON(reason) if reason else None,
        resolved_at=row[f"{prefix}resolved_at"],
    )


def withdrawal_values(withdrawal: Withdrawal) -> dict[str, Any]:
    return {
        "id": withdrawal.id,
        "certificate_id": withdrawal.certificate_id,
        "status": withdrawal.status.value,
        "failure_reason": withdrawal.failure_reason.value if withdrawal.failure_reason else None,
        "previous_status": withdrawal.previous_status.value,
        "requested_at": withdrawal.requested_at,
        "resolved_at": withdrawal.resolved_at,
    }


def certificate_from_row(row: Mapping[Any, Any]) -> Certificate:
    """A certificate from a `certificates` row joined with its last withdrawal (`w_` columns)."""
    method = row["validation_method"]
    validation = (
        DomainValidation(
            method=_METHOD(method),
            records=records_from_json(row["validation_records"]),
            verified_at=row["validation_verified_at"],
        )
        if method
        else None
    )
    organization = (
        Organization(
            row["organization_name"],
            row["organization_country"],
            row["organization_verified_at"],
        )
        if row["organization_name"] is not None
        else None
    )
    return Certificate(
        id=CertificateId(row["id"]),
        tenant_id=TenantId(row["tenant_id"]),
        name=row["name"],
        type=_TYPE(row["type"]),
        domain_type=_DOMAIN_TYPE(row["domain_type"]),
        brand=row["brand"],
        domain_quota=row["domain_quota"],
        validity_years=row["validity_years"],
        status=_STATUS(row["status"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        domain=row["domain"],
        additional_domains=tuple(row["additional_domains"] or ()),
        domain_validation=validation,
        organization=organization,
        last_withdrawal=withdrawal_from_row(row, "w_") if "w_id" in row else None,
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        ca_order_id=row["ca_order_id"],
        ca_cursor=row["ca_cursor"],
        pending_domains=tuple(row["pending_domains"] or ()),
        addition_return_status=_status(row["addition_return_status"]),
        deletion_return_status=_status(row["deletion_return_status"]),
    )


def certificate_values(certificate: Certificate, next_poll_at: datetime | None) -> dict[str, Any]:
    validation = certificate.domain_validation
    organization = certificate.organization
    return {
        "id": certificate.id,
        "tenant_id": certificate.tenant_id,
        "name": certificate.name,
        "type": certificate.type.value,
        "domain_type": certificate.domain_type.value,
        "brand": certificate.brand,
        "domain_quota": certificate.domain_quota,
        "validity_years": certificate.validity_years,
        "status": certificate.status.value,
        "version": certificate.version,
        "created_at": certificate.created_at,
        "updated_at": certificate.updated_at,
        "domain": certificate.domain,
        "additional_domains": list(certificate.additional_domains),
        "search_text": " ".join((certificate.name, *certificate.domains)).lower(),
        "validation_method": validation.method.value if validation else None,
        "validation_records": records_to_json(validation.records) if validation else None,
        "validation_verified_at": validation.verified_at if validation else None,
        "organization_name": organization.name if organization else None,
        "organization_country": organization.country if organization else None,
        "organization_verified_at": organization.verified_at if organization else None,
        "last_withdrawal_id": certificate.last_withdrawal.id
        if certificate.last_withdrawal
        else None,
        "issued_at": certificate.issued_at,
        "expires_at": certificate.expires_at,
        "ca_order_id": certificate.ca_order_id,
        "ca_cursor": certificate.ca_cursor,
        "pending_domains": list(certificate.pending_domains),
        "addition_return_status": certificate.addition_return_status.value
        if certificate.addition_return_status
        else None,
        "deletion_return_status": certificate.deletion_return_status.value
        if certificate.deletion_return_status
        else None,
        "ca_next_poll_at": next_poll_at,
    }


def event_from_row(row: Mapping[Any, Any]) -> CertificateEvent:
    return CertificateEvent(
        id=row["id"],
        certificate_id=CertificateId(row["certificate_id"]),
        version=row["version"],
        kind=_EVENT_KIND(row["kind"]),
        from_status=_status(row["from_status"]),
        to_status=_STATUS(row["to_status"]),
        at=row["at"],
        message=row["message"],
    )


def event_values(event: CertificateEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "certificate_id": event.certificate_id,
        "version": event.version,
        "kind": event.kind.value,
        "from_status": event.from_status.value if event.from_status else None,
        "to_status": event.to_status.value,
        "at": event.at,
        "message": event.message,
    }


def document_from_row(row: Mapping[Any, Any]) -> CertificateDocument:
    return CertificateDocument(
        pem=row["pem"],
        serial_number=row["serial_number"],
        issuer=row["issuer"],
        subject=row["subject"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        dns_names=tuple(row["dns_names"] or ()),
        sha256_fingerprint=row["sha256_fingerprint"],
    )


def document_values(certificate_id: str, document: CertificateDocument) -> dict[str, Any]:
    return {
        "certificate_id": certificate_id,
        "pem": document.pem,
        "serial_number": document.serial_number,
        "issuer": document.issuer,
        "subject": document.subject,
        "not_before": document.not_before,
        "not_after": document.not_after,
        "dns_names": list(document.dns_names),
        "sha256_fingerprint": document.sha256_fingerprint,
    }
