"""Domain layer: the one transition table of the certificate lifecycle, and what it allows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from domain.statuses import (
    CertificateAction,
    CertificateStatus,
    DomainType,
    EventKind,
    WithdrawalBlockReason,
)

S = CertificateStatus
K = EventKind

# Statuses in which the CA holds an application under review; used by the table below
# and by the worker, which asks the CA about exactly these certificates.
UNDER_APPLICATION: Final = frozenset(
    {
        S.PENDING_DOMAIN_VERIFICATION,
        S.PENDING_ORGANIZATION_VERIFICATION,
        S.CA_VERIFYING_DOMAIN_ADDITION,
    }
)
WITHDRAWABLE: Final = UNDER_APPLICATION
DELETABLE_AT_ONCE: Final = frozenset({S.PENDING_APPLICATION, S.REJECTED, S.REVOKED, S.EXPIRED})
DELETABLE_THROUGH_CA: Final = frozenset({S.ISSUED} | UNDER_APPLICATION)
APPLICABLE: Final = frozenset({S.PENDING_APPLICATION, S.REJECTED})
CA_PENDING: Final = frozenset(
    UNDER_APPLICATION
    | {S.CA_VERIFYING_WITHDRAWAL, S.CA_VERIFYING_REVOCATION, S.CA_VERIFYING_DELETION}
)
# The CA may issue at any point before issuance while it still holds the application.
ISSUABLE: Final = frozenset(UNDER_APPLICATION | {S.CA_VERIFYING_WITHDRAWAL})


def _rows(
    kind: EventKind, sources: Iterable[CertificateStatus], target: CertificateStatus
) -> set[tuple[EventKind, CertificateStatus | None, CertificateStatus]]:
    return {(kind, source, target) for source in sources}


def _back(
    kind: EventKind, source: CertificateStatus, targets: Iterable[CertificateStatus]
) -> set[tuple[EventKind, CertificateStatus | None, CertificateStatus]]:
    return {(kind, source, target) for target in targets}


# THE lifecycle: every (event kind, from status, to status) the service may record. No code
# path changes a certificate's status except through `Certificate._move`, which checks here.
TRANSITIONS: Final[frozenset[tuple[EventKind, CertificateStatus | None, CertificateStatus]]] = (
    frozenset(
        {(K.CREATED, None, S.PENDING_APPLICATION)}
        | _rows(K.APPLIED, APPLICABLE, S.PENDING_DOMAIN_VERIFICATION)
        | _rows(
            K.DOMAIN_VERIFICATION_REQUESTED,
            {S.PENDING_DOMAIN_VERIFICATION},
            S.PENDING_DOMAIN_VERIFICATION,
        )
        # Domain check approved: OV/EV go on to the organization check, DV is issued at once.
        | _back(
            K.DOMAIN_VERIFIED,
            S.PENDING_DOMAIN_VERIFICATION,
            {S.PENDING_ORGANIZATION_VERIFICATION, S.ISSUED},
        )
        | _rows(K.ORGANIZATION_VERIFIED, {S.PENDING_ORGANIZATION_VERIFICATION}, S.ISSUED)
        | _rows(
            K.REJECTED,
            {S.PENDING_DOMAIN_VERIFICATION, S.PENDING_ORGANIZATION_VERIFICATION},
            S.REJECTED,
        )
        | _rows(
            K.DOMAINS_ADDED,
            {S.PENDING_DOMAIN_VERIFICATION, S.PENDING_ORGANIZATION_VERIFICATION},
            S.CA_VERIFYING_DOMAIN_ADDITION,
        )
        | _rows(
            K.DOMAIN_ADDITION_APPROVED,
            {S.CA_VERIFYING_DOMAIN_ADDITION},
            S.PENDING_DOMAIN_VERIFICATION,
        )
        | _back(
            K.DOMAIN_ADDITION_REJECTED,
            S.CA_VERIFYING_DOMAIN_ADDITION,
            {S.PENDING_DOMAIN_VERIFICATION, S.PENDING_ORGANIZATION_VERIFICATION},
        )
        | _rows(K.WITHDRAWAL_REQUESTED, WITHDRAWABLE, S.CA_VERIFYING_WITHDRAWAL)
        | _rows(K.WITHDRAWAL_SUCCEEDED, {S.CA_VERIFYING_WITHDRAWAL}, S.PENDING_APPLICATION)
        # A failed withdrawal: the CA turned it down (back to the review it interrupted), or the
        # CA had already approved the certificate (issued, synchronously or after the request).
        | _back(K.WITHDRAWAL_FAILED, S.CA_VERIFYING_WITHDRAWAL, UNDER_APPLICATION | {S.ISSUED})
        | _rows(K.WITHDRAWAL_FAILED, WITHDRAWABLE, S.ISSUED)
        | _rows(K.ISSUED, UNDER_APPLICATION, S.ISSUED)
        | _rows(K.REVOCATION_REQUESTED, {S.ISSUED}, S.CA_VERIFYING_REVOCATION)
        | _rows(K.REVOKED, {S.CA_VERIFYING_REVOCATION}, S.REVOKED)
        | _rows(K.REVOCATION_REJECTED, {S.CA_VERIFYING_REVOCATION}, S.ISSUED)
        | _rows(K.DELETION_REQUESTED, DELETABLE_THROUGH_CA, S.CA_VERIFYING_DELETION)
        | _rows(K.DELETED, DELETABLE_AT_ONCE | {S.CA_VERIFYING_DELETION}, S.DELETED)
        | _back(K.DELETION_REJECTED, S.CA_VERIFYING_DELETION, DELETABLE_THROUGH_CA)
        | _rows(K.EXPIRED, {S.ISSUED}, S.EXPIRED)
    )
)

# Each action, the statuses in which its mutation is accepted.
ACTION_STATUSES: Final[dict[CertificateAction, frozenset[CertificateStatus]]] = {
    CertificateAction.APPLY: APPLICABLE,
    CertificateAction.VERIFY_DOMAIN: frozenset({S.PENDING_DOMAIN_VERIFICATION}),
    CertificateAction.ADD_DOMAINS: frozenset(
        {S.PENDING_DOMAIN_VERIFICATION, S.PENDING_ORGANIZATION_VERIFICATION}
    ),
    CertificateAction.WITHDRAW_APPLICATION: WITHDRAWABLE,
    CertificateAction.REVOKE: frozenset({S.ISSUED}),
    CertificateAction.DELETE: DELETABLE_AT_ONCE | DELETABLE_THROUGH_CA,
}

# Statuses that refuse a withdrawal for a reason of their own rather than merely the status:
# something was submitted that rules the withdrawal out, and the caller is told what.
WITHDRAWAL_BLOCKS: Final[dict[CertificateStatus, WithdrawalBlockReason]] = {
    S.CA_VERIFYING_DELETION: WithdrawalBlockReason.DELETION_REQUESTED,
    S.CA_VERIFYING_REVOCATION: WithdrawalBlockReason.REVOCATION_REQUESTED,
}


def is_allowed(
    kind: EventKind, source: CertificateStatus | None, target: CertificateStatus
) -> bool:
    return (kind, source, target) in TRANSITIONS


def available_actions(
    status: CertificateStatus, domain_type: DomainType, domain_count: int, domain_quota: int
) -> list[CertificateAction]:
    """What the caller may do now: exactly what the mutations accept, in a stable order."""
    actions = []
    for action, statuses in ACTION_STATUSES.items():
        if status not in statuses:
            continue
        if action is CertificateAction.ADD_DOMAINS and (
            domain_type is not DomainType.MULTIPLE or domain_count >= domain_quota
        ):
            continue
        actions.append(action)
    return actions
