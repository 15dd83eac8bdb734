"""Domain layer: what each CA decision does to a certificate, given where it stands."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from domain import lifecycle
from domain.ca import CaDecision, DecisionKind
from domain.model import Certificate
from domain.statuses import CertificateStatus, CertificateType, EventKind

log = logging.getLogger(__name__)
S = CertificateStatus
D = DecisionKind


# The CA's answer to a request this service made and waits on (in the status it moved to):
# the certificate's own move for it, which needs nothing from the decision but its time.
_SETTLES: dict[tuple[DecisionKind, CertificateStatus], Callable[[Certificate, datetime], None]] = {
    (D.ADDITION_REJECTED, S.CA_VERIFYING_DOMAIN_ADDITION): Certificate.domain_addition_rejected,
    (D.WITHDRAWAL_APPROVED, S.CA_VERIFYING_WITHDRAWAL): Certificate.withdrawal_succeeded,
    (D.WITHDRAWAL_REJECTED, S.CA_VERIFYING_WITHDRAWAL): Certificate.withdrawal_rejected,
    (D.REVOCATION_APPROVED, S.CA_VERIFYING_REVOCATION): Certificate.revoked,
    (D.REVOCATION_REJECTED, S.CA_VERIFYING_REVOCATION): Certificate.revocation_rejected,
    (D.DELETION_APPROVED, S.CA_VERIFYING_DELETION): Certificate.deleted,
    (D.DELETION_REJECTED, S.CA_VERIFYING_DELETION): Certificate.deletion_rejected,
}


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
    elif settles := _SETTLES.get((kind, status)):
        settles(certificate, now)
    elif kind is D.WITHDRAWAL_APPROVED and status in lifecycle.WITHDRAWABLE:
        # The CA took a withdrawal whose request never reached our database (the process
        # died in between): record it, so the service converges on the CA's answer.
        certificate.request_withdrawal(now)
        certificate.withdrawal_succeeded(now)
    elif kind is D.ISSUED and status is S.CA_VERIFYING_WITHDRAWAL:
        assert certificate.last_withdrawal is not None
        certificate.withdrawal_overtaken_by_issue(
            certificate.last_withdrawal, issued_at, now, document
        )
    elif kind is D.ISSUED and status in lifecycle.UNDER_APPLICATION:
        certificate.issue(EventKind.ISSUED, issued_at, now, decision.message, document)
    else:
        # Already applied synchronously (e.g. the issue behind a refused withdrawal), or
        # about a review this service no longer waits for.
        log.info("CA decision %s skipped for %s in %s", kind, certificate.id, status)
        return False
    return True
