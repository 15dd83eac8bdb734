"""Domain layer: what each CA decision does to a certificate, given where it stands."""

from __future__ import annotations

import logging
from datetime import datetime

from domain import lifecycle
from domain.ca import CaDecision, DecisionKind
from domain.model import Certificate
from domain.statuses import CertificateStatus, CertificateType, EventKind

log = logging.getLogger(__name__)
S = CertificateStatus
D = DecisionKind


def apply_decision(certificate: Certificate, decision: CaDecision, now: datetime) -> bool:
    """Move the certificate as the CA decided; False when the decision no longer applies."""
    status, kind = certificate.status, decision.kind
    issued_at = decision.issued_at or decision.at
    document = decision.document
    if kind is D.DOMAIN_CHECK_APPROVED and status is S.PENDING_DOMAIN_VERIFICATION:
        if certificate.type is CertificateType.DV:
            certificate.issue(EventKind.DOMAIN_VERIFIED, issued_at, now, decision.message, document)
        else:
            certificate.domain_verified(now)
    elif kind is D.ORGANIZATION_APPROVED and status is S.PENDING_ORGANIZATION_VERIFICATION:
        certificate.issue(
            EventKind.ORGANIZATION_VERIFIED, issued_at, now, decision.message, document
        )
    elif kind in (D.DOMAIN_CHECK_REJECTED, D.ORGANIZATION_REJECTED) and status in (
        S.PENDING_DOMAIN_VERIFICATION,
        S.PENDING_ORGANIZATION_VERIFICATION,
    ):
        certificate.reject_application(decision.message, now)
    elif kind is D.ADDITION_APPROVED and status is S.CA_VERIFYING_DOMAIN_ADDITION:
        certificate.domain_addition_approved(decision.records, now)
    elif kind is D.ADDITION_REJECTED and status is S.CA_VERIFYING_DOMAIN_ADDITION:
        certificate.domain_addition_rejected(now)
    elif kind is D.WITHDRAWAL_APPROVED and status is S.CA_VERIFYING_WITHDRAWAL:
        certificate.withdrawal_succeeded(now)
    elif kind is D.WITHDRAWAL_APPROVED and status in lifecycle.WITHDRAWABLE:
        # The CA took a withdrawal whose request never reached our database (the process
        # died in between): record it, so the service converges on the CA's answer.
        certificate.request_withdrawal(now)
        certificate.withdrawal_succeeded(now)
    elif kind is D.WITHDRAWAL_REJECTED and status is S.CA_VERIFYING_WITHDRAWAL:
        certificate.withdrawal_rejected(now)
    elif kind is D.ISSUED and status is S.CA_VERIFYING_WITHDRAWAL:
        assert certificate.last_withdrawal is not None
        certificate.withdrawal_overtaken_by_issue(
            certificate.last_withdrawal, issued_at, now, document
        )
    elif kind is D.ISSUED and status in lifecycle.UNDER_APPLICATION:
        certificate.issue(EventKind.ISSUED, issued_at, now, decision.message, document)
    elif kind is D.REVOCATION_APPROVED and status is S.CA_VERIFYING_REVOCATION:
        certificate.revoked(now)
    elif kind is D.REVOCATION_REJECTED and status is S.CA_VERIFYING_REVOCATION:
        certificate.revocation_rejected(now)
    elif kind is D.DELETION_APPROVED and status is S.CA_VERIFYING_DELETION:
        certificate.deleted(now)
    elif kind is D.DELETION_REJECTED and status is S.CA_VERIFYING_DELETION:
        certificate.deletion_rejected(now)
    else:
        # Already applied synchronously (e.g. the issue behind a refused withdrawal), or
        # about a review this service no longer waits for.
        log.info("CA decision %s skipped for %s in %s", kind, certificate.id, status)
        return False
    return True
