"""The transition table is the lifecycle: every row is allowed, every other move refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from domain import lifecycle
from domain.lifecycle import TRANSITIONS, available_actions, is_allowed
from domain.model import Certificate, TransitionRefused
from domain.statuses import (
    CertificateAction,
    CertificateStatus,
    DomainType,
    EventKind,
)
from tests.fakes import bare_certificate

S = CertificateStatus
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALL_MOVES = list(itertools.product(EventKind, [None, *S], S))


def certificate_in(status: CertificateStatus) -> Certificate:
    return bare_certificate(status, now=NOW)


@pytest.mark.parametrize(
    ("kind", "source", "target"), sorted(TRANSITIONS, key=str), ids=lambda v: str(v)
)
def test_every_transition_in_the_table_is_allowed(
    kind: EventKind, source: CertificateStatus | None, target: CertificateStatus
) -> None:
    if source is None:
        certificate = certificate_in(S.PENDING_APPLICATION)
        assert certificate.version == 1
        return
    certificate = certificate_in(source)
    certificate._move(kind, target, NOW)
    assert certificate.status is target
    assert certificate.version == 2
    [event] = certificate.new_events
    assert (event.kind, event.from_status, event.to_status) == (kind, source, target)


def test_every_move_not_in_the_table_is_refused() -> None:
    refused = 0
    for kind, source, target in ALL_MOVES:
        if (kind, source, target) in TRANSITIONS or source is None:
            continue
        certificate = certificate_in(source)
        with pytest.raises(TransitionRefused):
            certificate._move(kind, target, NOW)
        assert certificate.status is source and certificate.version == 1
        assert not certificate.new_events
        refused += 1
    assert refused == len(EventKind) * len(S) * len(S) - sum(
        1 for _, source, _ in TRANSITIONS if source is not None
    )


def test_only_creation_starts_from_nothing() -> None:
    assert [t for t in TRANSITIONS if t[1] is None] == [
        (EventKind.CREATED, None, S.PENDING_APPLICATION)
    ]
    assert not is_allowed(EventKind.APPLIED, None, S.PENDING_DOMAIN_VERIFICATION)


def test_every_status_is_reachable_and_every_kind_is_used() -> None:
    assert {t[2] for t in TRANSITIONS} == set(S)
    assert {t[0] for t in TRANSITIONS} == set(EventKind)


def test_withdrawal_can_only_be_requested_while_the_ca_reviews_the_application() -> None:
    sources = {t[1] for t in TRANSITIONS if t[0] is EventKind.WITHDRAWAL_REQUESTED}
    assert sources == {
        S.PENDING_DOMAIN_VERIFICATION,
        S.PENDING_ORGANIZATION_VERIFICATION,
        S.CA_VERIFYING_DOMAIN_ADDITION,
    }


@pytest.mark.parametrize("status", list(S))
def test_each_available_action_has_a_transition_from_its_status(status: CertificateStatus) -> None:
    action_kinds = {
        CertificateAction.APPLY: {EventKind.APPLIED},
        CertificateAction.VERIFY_DOMAIN: {EventKind.DOMAIN_VERIFICATION_REQUESTED},
        CertificateAction.ADD_DOMAINS: {EventKind.DOMAINS_ADDED},
        CertificateAction.WITHDRAW_APPLICATION: {EventKind.WITHDRAWAL_REQUESTED},
        CertificateAction.REVOKE: {EventKind.REVOCATION_REQUESTED},
        CertificateAction.DELETE: {EventKind.DELETED, EventKind.DELETION_REQUESTED},
    }
    for action in available_actions(status, DomainType.MULTIPLE, 1, 5):
        assert any(t[0] in action_kinds[action] and t[1] is status for t in TRANSITIONS)


def test_add_domains_is_offered_only_to_multiple_certificates_with_room_in_the_quota() -> None:
    pdv = S.PENDING_DOMAIN_VERIFICATION
    assert CertificateAction.ADD_DOMAINS in available_actions(pdv, DomainType.MULTIPLE, 2, 3)
    assert CertificateAction.ADD_DOMAINS not in available_actions(pdv, DomainType.MULTIPLE, 3, 3)
    assert CertificateAction.ADD_DOMAINS not in available_actions(pdv, DomainType.SINGLE, 1, 1)


def test_actions_per_status_match_the_specification() -> None:
    A = CertificateAction
    expected = {
        S.PENDING_APPLICATION: [A.APPLY, A.DELETE],
        S.PENDING_DOMAIN_VERIFICATION: [
            A.VERIFY_DOMAIN,
            A.ADD_DOMAINS,
            A.WITHDRAW_APPLICATION,
            A.DELETE,
        ],
        S.PENDING_ORGANIZATION_VERIFICATION: [A.ADD_DOMAINS, A.WITHDRAW_APPLICATION, A.DELETE],
        S.CA_VERIFYING_DOMAIN_ADDITION: [A.WITHDRAW_APPLICATION, A.DELETE],
        S.CA_VERIFYING_WITHDRAWAL: [],
        S.ISSUED: [A.REVOKE, A.DELETE],
        S.REJECTED: [A.APPLY, A.DELETE],
        S.CA_VERIFYING_REVOCATION: [],
        S.REVOKED: [A.DELETE],
        S.CA_VERIFYING_DELETION: [],
        S.DELETED: [],
        S.EXPIRED: [A.DELETE],
    }
    for status, actions in expected.items():
        assert available_actions(status, DomainType.MULTIPLE, 1, 5) == actions, status


def test_statuses_that_block_a_withdrawal_are_those_a_deletion_or_revocation_leads_to() -> None:
    blocked = set(lifecycle.WITHDRAWAL_BLOCKS)
    assert not blocked & lifecycle.WITHDRAWABLE
    assert blocked == {
        target
        for kind, _, target in TRANSITIONS
        if kind in (EventKind.DELETION_REQUESTED, EventKind.REVOCATION_REQUESTED)
    }
