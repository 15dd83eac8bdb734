"""Domain layer: the vocabularies of the certificate lifecycle (statuses, kinds, actions)."""

from __future__ import annotations

from enum import StrEnum


class CertificateStatus(StrEnum):
    PENDING_APPLICATION = "PENDING_APPLICATION"
    PENDING_DOMAIN_VERIFICATION = "PENDING_DOMAIN_VERIFICATION"
    PENDING_ORGANIZATION_VERIFICATION = "PENDING_ORGANIZATION_VERIFICATION"
    CA_VERIFYING_DOMAIN_ADDITION = "CA_VERIFYING_DOMAIN_ADDITION"
    CA_VERIFYING_WITHDRAWAL = "CA_VERIFYING_WITHDRAWAL"
    ISSUED = "ISSUED"
    REJECTED = "REJECTED"
    CA_VERIFYING_REVOCATION = "CA_VERIFYING_REVOCATION"
    REVOKED = "REVOKED"
    CA_VERIFYING_DELETION = "CA_VERIFYING_DELETION"
    DELETED = "DELETED"
    EXPIRED = "EXPIRED"

    @property
    def label(self) -> str:
        return STATUS_LABELS[self]


STATUS_LABELS: dict[CertificateStatus, str] = {
    CertificateStatus.PENDING_APPLICATION: "Pending application",
    CertificateStatus.PENDING_DOMAIN_VERIFICATION: "Pending domain name verification",
    CertificateStatus.PENDING_ORGANIZATION_VERIFICATION: "Pending organization verification",
    CertificateStatus.CA_VERIFYING_DOMAIN_ADDITION: "CA verifying (domain name addition)",
    CertificateStatus.CA_VERIFYING_WITHDRAWAL: "CA verifying (application withdrawal)",
    CertificateStatus.ISSUED: "Issued",
    CertificateStatus.REJECTED: "Verification failed",
    CertificateStatus.CA_VERIFYING_REVOCATION: "CA verifying (revocation)",
    CertificateStatus.REVOKED: "Revoked",
    CertificateStatus.CA_VERIFYING_DELETION: "CA verifying (deletion)",
    CertificateStatus.DELETED: "Deleted",
    CertificateStatus.EXPIRED: "Expired",
}


class CertificateType(StrEnum):
    DV = "DV"
    OV = "OV"
    EV = "EV"

    @property
    def needs_organization(self) -> bool:
        return self is not CertificateType.DV


class DomainType(StrEnum):
    SINGLE = "SINGLE"
    WILDCARD = "WILDCARD"
    MULTIPLE = "MULTIPLE"


class ValidationMethod(StrEnum):
    DNS = "DNS"
    HTTP = "HTTP"
    EMAIL = "EMAIL"


class CertificateAction(StrEnum):
    APPLY = "APPLY"
    VERIFY_DOMAIN = "VERIFY_DOMAIN"
    ADD_DOMAINS = "ADD_DOMAINS"
    WITHDRAW_APPLICATION = "WITHDRAW_APPLICATION"
    REVOKE = "REVOKE"
    DELETE = "DELETE"


class WithdrawalStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class WithdrawalFailureReason(StrEnum):
    CA_ALREADY_APPROVED = "CA_ALREADY_APPROVED"
    CA_REJECTED = "CA_REJECTED"


class WithdrawalBlockReason(StrEnum):
    DELETION_REQUESTED = "DELETION_REQUESTED"
    REVOCATION_REQUESTED = "REVOCATION_REQUESTED"


class EventKind(StrEnum):
    """What happened to a certificate; each kind is one family of rows in the transition table."""

    CREATED = "CREATED"
    APPLIED = "APPLIED"
    DOMAIN_VERIFICATION_REQUESTED = "DOMAIN_VERIFICATION_REQUESTED"
    DOMAIN_VERIFIED = "DOMAIN_VERIFIED"
    ORGANIZATION_VERIFIED = "ORGANIZATION_VERIFIED"
    DOMAINS_ADDED = "DOMAINS_ADDED"
    DOMAIN_ADDITION_APPROVED = "DOMAIN_ADDITION_APPROVED"
    DOMAIN_ADDITION_REJECTED = "DOMAIN_ADDITION_REJECTED"
    WITHDRAWAL_REQUESTED = "WITHDRAWAL_REQUESTED"
    WITHDRAWAL_SUCCEEDED = "WITHDRAWAL_SUCCEEDED"
    WITHDRAWAL_FAILED = "WITHDRAWAL_FAILED"
    ISSUED = "ISSUED"
    REJECTED = "REJECTED"
    REVOCATION_REQUESTED = "REVOCATION_REQUESTED"
    REVOKED = "REVOKED"
    REVOCATION_REJECTED = "REVOCATION_REJECTED"
    DELETION_REQUESTED = "DELETION_REQUESTED"
    DELETED = "DELETED"
    DELETION_REJECTED = "DELETION_REJECTED"
    EXPIRED = "EXPIRED"
