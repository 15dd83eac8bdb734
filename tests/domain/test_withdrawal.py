"""Withdrawing an application, at the service layer over fakes: every outcome a caller can get.

The same rules run over real databases in tests/server/test_service.py and end to end in
tests/e2e/test_withdrawal_story.py; here they run in milliseconds.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from domain import lifecycle
from domain.ca import CaUnavailable, DecisionKind, WithdrawalAnswer, WithdrawalReply
from domain.commands import Application
from domain.model import Certificate, CertificateId, TenantId, Withdrawal, add_years
from domain.results import (
    CaAlreadyApproved,
    CaUnreachable,
    CertificateChanged,
    InvalidInput,
    InvalidState,
    NotFound,
    WithdrawalNotAllowed,
    WithdrawalSubmitted,
)
from domain.statuses import (
    CertificateStatus,
    CertificateType,
    DomainType,
    ValidationMethod,
    WithdrawalBlockReason,
    WithdrawalFailureReason,
    WithdrawalStatus,
)
from tests.fakes import Fakes

S = CertificateStatus
ACME, GLOBEX = TenantId("acme"), TenantId("globex")
WITHDRAWABLE = sorted(lifecycle.WITHDRAWABLE)
NOT_WITHDRAWABLE = [S.PENDING_APPLICATION, S.CA_VERIFYING_WITHDRAWAL, S.ISSUED, S.REJECTED]


def changed(outcome: object) -> Certificate:
    assert isinstance(outcome, CertificateChanged), outcome
    return outcome.certificate


async def certificate_in(
    fakes: Fakes, status: CertificateStatus, tenant: TenantId = ACME
) -> Certificate:
    """A certificate of `tenant` taken to `status` through the service and the fake CA;
    what the CA and the publisher saw on the way is forgotten."""
    service, ca = fakes.service, fakes.ca
    type = (
        CertificateType.OV if status is S.PENDING_ORGANIZATION_VERIFICATION else CertificateType.DV
    )
    multiple = status is S.CA_VERIFYING_DOMAIN_ADDITION
    certificate = changed(
        await service.create_certificate(
            tenant,
            name="web",
            type=type,
            domain_type=DomainType.MULTIPLE if multiple else DomainType.SINGLE,
            brand="DigiCert",
            domain_quota=3 if multiple else 1,
            validity_years=1,
        )
    )
    if status is not S.PENDING_APPLICATION:
        application = Application(
            "web.example.com",
            [],
            ValidationMethod.DNS,
            *(("Example Ltd", "GB") if type is CertificateType.OV else ()),
        )
        certificate = changed(await service.apply(tenant, certificate.id, application))
    order = certificate.ca_order_id or ""
    if status is S.PENDING_ORGANIZATION_VERIFICATION:
        ca.decide(order, DecisionKind.DOMAIN_CHECK_APPROVED)
    elif status in (S.ISSUED, S.CA_VERIFYING_REVOCATION, S.REJECTED):
        rejected = status is S.REJECTED
        ca.decide(order, DecisionKind.DOMAIN_CHECK_REJECTED if rejected else DecisionKind.ISSUED)
    await service.sync_with_ca([certificate.id])
    if status is S.CA_VERIFYING_DOMAIN_ADDITION:
        changed(await service.add_domains(tenant, certificate.id, ["api.example.com"]))
    elif status is S.CA_VERIFYING_REVOCATION:
        changed(await service.revoke(tenant, certificate.id, "drill"))
    elif status is S.CA_VERIFYING_DELETION:
        changed(await service.delete(tenant, certificate.id))
    elif status is S.CA_VERIFYING_WITHDRAWAL:
        assert isinstance(await service.withdraw(tenant, certificate.id), WithdrawalSubmitted)
    stored = fakes.store.stored(certificate.id)
    assert stored.status is status
    ca.calls.clear()
    fakes.publisher.published.clear()
    return stored


async def withdrawn_then_decided(
    fakes: Fakes, status: CertificateStatus, decision: DecisionKind
) -> tuple[Certificate, Certificate, Withdrawal]:
    """A certificate taken to `status`, its withdrawal submitted and, five minutes later, the
    CA's `decision` synced: the certificate before, as stored after, and its withdrawal."""
    before = await certificate_in(fakes, status)
    submitted = await fakes.service.withdraw(ACME, before.id)
    assert isinstance(submitted, WithdrawalSubmitted) and before.ca_order_id
    fakes.clock.advance(minutes=5)
    fakes.ca.decide(before.ca_order_id, decision)
    assert await fakes.service.sync_with_ca([CertificateId(before.id)]) == 1
    return before, fakes.store.stored(before.id), fakes.store.withdrawals[submitted.withdrawal.id]


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.mark.parametrize("status", WITHDRAWABLE)
async def test_a_withdrawal_is_submitted_while_the_ca_reviews_the_application(
    fakes: Fakes, status: CertificateStatus
) -> None:
    before = await certificate_in(fakes, status)

    result = await fakes.service.withdraw(ACME, before.id)

    assert isinstance(result, WithdrawalSubmitted)
    assert result.message == "Request for canceling the application submitted successfully."
    assert result.withdrawal.status is WithdrawalStatus.PENDING
    assert result.withdrawal.previous_status is status
    stored = fakes.store.stored(before.id)
    assert stored.status is S.CA_VERIFYING_WITHDRAWAL
    assert stored.version == before.version + 1
    assert stored.last_withdrawal == result.withdrawal
    # The CA was asked once, with the key of the version read; subscribers heard of it.
    [call] = fakes.ca.calls
    assert (call.method, call.order_id) == ("request_withdrawal", before.ca_order_id)
    assert call.key == f"{before.id}:{before.version}:withdrawal"
    [change] = fakes.publisher.published
    assert (change.previous_status, change.status) == (status, S.CA_VERIFYING_WITHDRAWAL)


async def test_a_ca_that_had_already_approved_issues_the_certificate_and_fails_the_withdrawal(
    fakes: Fakes,
) -> None:
    before = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    issued_at = fakes.clock.now() - timedelta(hours=1)
    fakes.ca.withdrawal_reply = WithdrawalReply(WithdrawalAnswer.ALREADY_ISSUED, issued_at)

    result = await fakes.service.withdraw(ACME, before.id)

    assert isinstance(result, CaAlreadyApproved)
    assert result.withdrawal.status is WithdrawalStatus.FAILED
    assert result.withdrawal.failure_reason is WithdrawalFailureReason.CA_ALREADY_APPROVED
    stored = fakes.store.stored(before.id)
    assert stored.status is S.ISSUED
    assert stored.issued_at == issued_at
    assert stored.expires_at == add_years(issued_at, 1)
    assert fakes.store.withdrawals[result.withdrawal.id] == result.withdrawal


async def test_an_unreachable_ca_changes_nothing(fakes: Fakes) -> None:
    before = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    commits = fakes.store.commits
    fakes.ca.reachable, fakes.ca.retry_after = False, 45

    result = await fakes.service.withdraw(ACME, before.id, "key-1")

    assert result == CaUnreachable(45)
    assert fakes.store.stored(before.id) == before
    assert fakes.store.commits == commits
    assert not fakes.store.keys and not fakes.publisher.published
    # Once the CA answers again, the same key gets a withdrawal of its own.
    fakes.ca.reachable = True
    assert isinstance(await fakes.service.withdraw(ACME, before.id, "key-1"), WithdrawalSubmitted)


async def test_an_unknown_certificate_or_another_tenants_is_not_found(fakes: Fakes) -> None:
    theirs = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)

    assert await fakes.service.withdraw(ACME, "no-such-id") == NotFound("no-such-id")
    assert await fakes.service.withdraw(GLOBEX, theirs.id) == NotFound(theirs.id)
    assert fakes.store.stored(theirs.id) == theirs
    assert not fakes.ca.calls


@pytest.mark.parametrize("status", NOT_WITHDRAWABLE)
async def test_a_withdrawal_is_refused_outside_the_review_without_asking_the_ca(
    fakes: Fakes, status: CertificateStatus
) -> None:
    before = await certificate_in(fakes, status)

    result = await fakes.service.withdraw(ACME, before.id)

    assert isinstance(result, InvalidState)
    assert result.allowed == lifecycle.WITHDRAWABLE
    assert result.message.startswith(
        f"Cannot withdraw the application of a certificate in status {status};"
    )
    assert fakes.store.stored(before.id) == before
    assert not fakes.ca.calls


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (S.CA_VERIFYING_DELETION, WithdrawalBlockReason.DELETION_REQUESTED),
        (S.CA_VERIFYING_REVOCATION, WithdrawalBlockReason.REVOCATION_REQUESTED),
    ],
)
async def test_a_withdrawal_is_not_allowed_once_a_deletion_or_revocation_is_submitted(
    fakes: Fakes, status: CertificateStatus, reason: WithdrawalBlockReason
) -> None:
    before = await certificate_in(fakes, status)

    result = await fakes.service.withdraw(ACME, before.id, "key")

    assert isinstance(result, WithdrawalNotAllowed)
    assert result.reason is reason
    assert fakes.store.stored(before.id) == before
    assert not fakes.ca.calls and not fakes.store.keys


async def test_a_retry_with_the_same_key_gets_the_first_answer_and_acts_once(
    fakes: Fakes,
) -> None:
    before = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)

    first = await fakes.service.withdraw(ACME, before.id, "retry-me")
    again = await fakes.service.withdraw(ACME, before.id, "retry-me")

    assert isinstance(first, WithdrawalSubmitted) and isinstance(again, WithdrawalSubmitted)
    assert again.withdrawal == first.withdrawal
    assert again.certificate.version == first.certificate.version
    assert len(fakes.ca.calls) == 1 and len(fakes.store.withdrawals) == 1
    # Without the key, the same request is refused: the certificate has moved on.
    assert isinstance(await fakes.service.withdraw(ACME, before.id), InvalidState)


async def test_a_key_used_for_one_certificate_is_refused_for_another(fakes: Fakes) -> None:
    first = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    second = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    assert isinstance(await fakes.service.withdraw(ACME, first.id, "shared"), WithdrawalSubmitted)
    fakes.ca.calls.clear()

    reused = await fakes.service.withdraw(ACME, second.id, "shared")

    assert reused == InvalidInput(
        "idempotency_key", "This idempotency key was used for another certificate."
    )
    assert fakes.store.stored(second.id) == second
    assert not fakes.ca.calls


async def test_each_tenant_has_its_own_keys(fakes: Fakes) -> None:
    theirs = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION, GLOBEX)
    ours = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    assert isinstance(await fakes.service.withdraw(GLOBEX, theirs.id, "k"), WithdrawalSubmitted)

    assert isinstance(await fakes.service.withdraw(ACME, ours.id, "k"), WithdrawalSubmitted)

    assert {(tenant, operation.value, key) for tenant, operation, key in fakes.store.keys} == {
        (GLOBEX, "withdraw_application", "k"),
        (ACME, "withdraw_application", "k"),
    }


@pytest.mark.parametrize("key", ["", "k" * 129])
async def test_an_idempotency_key_has_1_to_128_characters(fakes: Fakes, key: str) -> None:
    before = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    result = await fakes.service.withdraw(ACME, before.id, key)
    assert isinstance(result, InvalidInput) and result.field == "idempotency_key"
    assert not fakes.ca.calls
    assert isinstance(await fakes.service.withdraw(ACME, before.id, "k" * 128), WithdrawalSubmitted)


async def test_of_concurrent_withdrawals_exactly_one_succeeds(fakes: Fakes) -> None:
    before = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    # Both requests read the same version and reach the CA before either writes.
    fakes.ca.hold = asyncio.Barrier(2)

    results = await asyncio.gather(*(fakes.service.withdraw(ACME, before.id) for _ in range(2)))

    assert sorted(type(r).__name__ for r in results) == ["InvalidState", "WithdrawalSubmitted"]
    # The loser's compare-and-set failed; it re-read and found the withdrawal under way.
    assert fakes.store.conflicts == 1
    assert len(fakes.store.withdrawals) == 1
    # Both asked the CA, with the same key: the CA acted once.
    asked = fakes.ca.asked("request_withdrawal")
    assert len(asked) == 2
    assert {call.key for call in asked} == {f"{before.id}:{before.version}:withdrawal"}


async def test_concurrent_retries_with_one_key_both_get_the_winners_answer(fakes: Fakes) -> None:
    before = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    fakes.ca.hold = asyncio.Barrier(2)

    first, second = await asyncio.gather(
        *(fakes.service.withdraw(ACME, before.id, "same") for _ in range(2))
    )

    assert isinstance(first, WithdrawalSubmitted) and isinstance(second, WithdrawalSubmitted)
    assert first.withdrawal == second.withdrawal
    assert fakes.store.conflicts == 1 and len(fakes.store.withdrawals) == 1


@pytest.mark.parametrize("status", WITHDRAWABLE)
async def test_the_ca_approving_later_returns_the_certificate_to_pending_application(
    fakes: Fakes, status: CertificateStatus
) -> None:
    before, stored, withdrawal = await withdrawn_then_decided(
        fakes, status, DecisionKind.WITHDRAWAL_APPROVED
    )

    assert stored.status is S.PENDING_APPLICATION
    assert stored.ca_order_id is None and stored.domain_validation is None
    assert stored.domains == before.domains
    assert withdrawal.status is WithdrawalStatus.SUCCEEDED
    assert withdrawal.resolved_at == fakes.clock.now()


@pytest.mark.parametrize("status", WITHDRAWABLE)
async def test_a_withdrawal_the_ca_rejects_returns_to_the_status_it_interrupted(
    fakes: Fakes, status: CertificateStatus
) -> None:
    before, stored, withdrawal = await withdrawn_then_decided(
        fakes, status, DecisionKind.WITHDRAWAL_REJECTED
    )

    assert stored.status is status is withdrawal.previous_status
    assert stored.ca_order_id == before.ca_order_id
    assert withdrawal.status is WithdrawalStatus.FAILED
    assert withdrawal.failure_reason is WithdrawalFailureReason.CA_REJECTED
    # Back under review, the application can be withdrawn again, with a new CA key.
    again = await fakes.service.withdraw(ACME, before.id)
    assert isinstance(again, WithdrawalSubmitted) and again.withdrawal.id != withdrawal.id
    assert len({call.key for call in fakes.ca.asked("request_withdrawal")}) == 2


async def test_an_issue_decided_during_the_withdrawal_fails_it(fakes: Fakes) -> None:
    _, stored, withdrawal = await withdrawn_then_decided(
        fakes, S.PENDING_ORGANIZATION_VERIFICATION, DecisionKind.ISSUED
    )

    assert stored.status is S.ISSUED
    assert withdrawal.failure_reason is WithdrawalFailureReason.CA_ALREADY_APPROVED


async def test_decisions_wait_while_the_ca_cannot_be_asked(fakes: Fakes) -> None:
    before = await certificate_in(fakes, S.PENDING_DOMAIN_VERIFICATION)
    assert isinstance(await fakes.service.withdraw(ACME, before.id), WithdrawalSubmitted)
    assert before.ca_order_id
    fakes.ca.decide(before.ca_order_id, DecisionKind.WITHDRAWAL_APPROVED)
    fakes.ca.reachable = False

    with pytest.raises(CaUnavailable):
        await fakes.service.sync_with_ca([CertificateId(before.id)])

    assert fakes.store.stored(before.id).status is S.CA_VERIFYING_WITHDRAWAL
    fakes.ca.reachable = True
    assert await fakes.service.sync_with_ca([CertificateId(before.id)]) == 1
    assert fakes.store.stored(before.id).status is S.PENDING_APPLICATION
