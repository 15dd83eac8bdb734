"""The certificate aggregate checks a transition before it changes anything: a refused move
leaves every field as it was, not a half-changed certificate."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from domain.model import (
    Certificate,
    DnsRecord,
    DomainValidation,
    Organization,
    TransitionRefused,
    Withdrawal,
    WithdrawalId,
)
from domain.statuses import (
    CertificateStatus,
    CertificateType,
    DomainType,
    EventKind,
    ValidationMethod,
    WithdrawalStatus,
)
from tests.fakes import bare_certificate

S = CertificateStatus
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=1)
RECORD = DnsRecord("_acme.new.example.com", "TXT", "new")


def rich_certificate(status: CertificateStatus) -> Certificate:
    """A certificate with every field a change could touch already set, in `status`."""
    certificate = bare_certificate(status, CertificateType.OV, DomainType.MULTIPLE, 5, NOW)
    certificate.domain = "a.example.com"
    certificate.additional_domains = ("b.example.com",)
    certificate.domain_validation = DomainValidation(ValidationMethod.DNS, ())
    certificate.organization = Organization("Example Ltd", "GB")
    certificate.ca_order_id, certificate.ca_cursor = "order-1", 3
    certificate.pending_domains = ("c.example.com",)
    certificate.addition_return_status = S.PENDING_ORGANIZATION_VERIFICATION
    certificate.deletion_return_status = S.PENDING_DOMAIN_VERIFICATION
    certificate.last_withdrawal = Withdrawal(
        WithdrawalId("w"),
        certificate.id,
        WithdrawalStatus.PENDING,
        S.PENDING_DOMAIN_VERIFICATION,
        NOW,
    )
    return certificate


def apply(c: Certificate) -> object:
    return c.apply(
        domain="new.example.com",
        additional_domains=(),
        method=ValidationMethod.HTTP,
        organization=None,
        records=(RECORD,),
        ca_order_id="order-2",
        now=LATER,
    )


# Each change, and a status that refuses it.
REFUSED: list[tuple[str, CertificateStatus, Callable[[Certificate], object]]] = [
    ("apply", S.ISSUED, apply),
    ("request_domain_verification", S.ISSUED, lambda c: c.request_domain_verification(LATER)),
    ("add_domains", S.ISSUED, lambda c: c.add_domains(("d.example.com",), LATER)),
    ("request_withdrawal", S.ISSUED, lambda c: c.request_withdrawal(LATER)),
    ("request_revocation", S.PENDING_APPLICATION, lambda c: c.request_revocation("r", LATER)),
    ("delete_at_once", S.ISSUED, lambda c: c.delete_at_once(LATER)),
    ("request_deletion", S.PENDING_APPLICATION, lambda c: c.request_deletion(LATER)),
    ("issue", S.PENDING_APPLICATION, lambda c: c.issue(EventKind.ISSUED, LATER, LATER, None)),
    ("domain_verified", S.ISSUED, lambda c: c.domain_verified(LATER)),
    ("reject_application", S.ISSUED, lambda c: c.reject_application("no", LATER)),
    ("domain_addition_approved", S.ISSUED, lambda c: c.domain_addition_approved((RECORD,), LATER)),
    ("domain_addition_rejected", S.ISSUED, lambda c: c.domain_addition_rejected(LATER)),
    ("withdrawal_succeeded", S.ISSUED, lambda c: c.withdrawal_succeeded(LATER)),
    ("withdrawal_rejected", S.ISSUED, lambda c: c.withdrawal_rejected(LATER)),
    (
        "refuse_withdrawal_as_issued",
        S.PENDING_APPLICATION,
        lambda c: c.refuse_withdrawal_as_issued(LATER, LATER),
    ),
    ("revoked", S.ISSUED, lambda c: c.revoked(LATER)),
    ("revocation_rejected", S.PENDING_APPLICATION, lambda c: c.revocation_rejected(LATER)),
    ("deleted", S.ISSUED, lambda c: c.deleted(LATER)),
    ("deletion_rejected", S.PENDING_APPLICATION, lambda c: c.deletion_rejected(LATER)),
    ("expire", S.PENDING_APPLICATION, lambda c: c.expire(LATER)),
]


@pytest.mark.parametrize(("change", "status", "act"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_refused_change_leaves_the_certificate_unchanged(
    change: str, status: CertificateStatus, act: Callable[[Certificate], object]
) -> None:
    certificate = rich_certificate(status)
    before = copy.deepcopy(certificate)

    with pytest.raises(TransitionRefused):
        act(certificate)

    assert certificate == before


def test_every_change_of_the_aggregate_is_covered() -> None:
    public = {
        name
        for name, value in vars(Certificate).items()
        if callable(value) and not name.startswith("_") and name not in {"create", "allows"}
    }
    assert public == {change for change, _, _ in REFUSED} | {"withdrawal_overtaken_by_issue"}


def test_an_accepted_change_records_one_event_after_changing_the_fields() -> None:
    certificate = rich_certificate(S.PENDING_DOMAIN_VERIFICATION)

    withdrawal = certificate.request_withdrawal(LATER)

    assert withdrawal.previous_status is S.PENDING_DOMAIN_VERIFICATION
    assert certificate.status is S.CA_VERIFYING_WITHDRAWAL
    assert certificate.last_withdrawal == withdrawal and certificate.withdrawal_changed
    [event] = certificate.new_events
    assert (event.from_status, event.to_status, event.at) == (
        S.PENDING_DOMAIN_VERIFICATION,
        S.CA_VERIFYING_WITHDRAWAL,
        LATER,
    )
