"""The domain service over a real SQLite file and the simulated CA: the withdrawal rules."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from domain.ca import CaUnavailable
from domain.commands import Application
from domain.model import Certificate
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
from domain.sandbox import SandboxDecision
from domain.statuses import (
    CertificateStatus,
    CertificateType,
    DomainType,
    EventKind,
    ValidationMethod,
    WithdrawalBlockReason,
    WithdrawalFailureReason,
    WithdrawalStatus,
)
from server.migrate import alembic_config
from server.seed import ShiftedClock
from tests.server.conftest import Stack, build_stack
from tests.support import drive_named, sql_rows

S = CertificateStatus
WITHDRAWABLE = [
    S.PENDING_DOMAIN_VERIFICATION,
    S.PENDING_ORGANIZATION_VERIFICATION,
    S.CA_VERIFYING_DOMAIN_ADDITION,
]


async def make(stack: Stack, status: CertificateStatus, name: str = "web") -> Certificate:
    service, sandbox = stack.service, stack.sandbox
    if status is S.EXPIRED:
        # Issued long enough ago to have expired: the same database, a clock in the past.
        past = await build_stack("", ShiftedClock(timedelta(days=-800)), stack.db)
        service, sandbox = past.service, past.sandbox
    certificate_id = await drive_named(
        service, sandbox, stack.tenant, name, status, present=stack.service
    )
    certificate = await load(stack, certificate_id)
    assert certificate.status is status
    return certificate


async def load(stack: Stack, certificate_id: str) -> Certificate:
    return await stack.load(certificate_id)


async def decide(stack: Stack, certificate: Certificate, decision: SandboxDecision) -> Certificate:
    assert certificate.ca_order_id is not None
    assert await stack.ca.decide(certificate.ca_order_id, decision)
    await stack.worker.run_once()
    return await load(stack, certificate.id)


async def history(stack: Stack, certificate_id: str) -> list[tuple[str, str | None, str]]:
    return await sql_rows(
        stack.db,
        "SELECT kind, from_status, to_status FROM certificate_events "
        "WHERE certificate_id = :id ORDER BY version",
        id=certificate_id,
    )


@pytest.mark.parametrize("status", list(CertificateStatus))
async def test_every_status_is_reachable_through_the_public_operations(
    sqlite_stack: Stack, status: CertificateStatus
) -> None:
    certificate = await make(sqlite_stack, status)
    events = await history(sqlite_stack, certificate.id)
    assert events[0] == ("CREATED", None, "PENDING_APPLICATION")
    # Each event starts where the previous one ended, and the version counts the events.
    for before, after in itertools.pairwise(events):
        assert after[1] == before[2]
    assert events[-1][2] == status.value
    assert certificate.version == len(events)


@pytest.mark.parametrize("status", WITHDRAWABLE)
async def test_withdrawal_is_submitted_while_the_ca_reviews_the_application(
    sqlite_stack: Stack, status: CertificateStatus
) -> None:
    certificate = await make(sqlite_stack, status)
    result = await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id)
    assert isinstance(result, WithdrawalSubmitted)
    assert result.message == "Request for canceling the application submitted successfully."
    assert result.certificate.status is S.CA_VERIFYING_WITHDRAWAL
    assert result.withdrawal.status is WithdrawalStatus.PENDING
    assert result.withdrawal.previous_status is status
    assert result.certificate.version == certificate.version + 1


async def test_an_approved_withdrawal_returns_to_pending_application_and_clears_validation(
    sqlite_stack: Stack,
) -> None:
    certificate = await make(sqlite_stack, S.PENDING_ORGANIZATION_VERIFICATION)
    await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id)
    after = await decide(sqlite_stack, certificate, SandboxDecision.APPROVE)
    assert after.status is S.PENDING_APPLICATION
    assert after.last_withdrawal is not None
    assert after.last_withdrawal.status is WithdrawalStatus.SUCCEEDED
    assert after.last_withdrawal.resolved_at is not None
    assert after.domain_validation is None and after.organization is None
    assert after.domain == "web.example.com"
    kinds = [e[0] for e in await history(sqlite_stack, certificate.id)]
    assert kinds[-2:] == ["WITHDRAWAL_REQUESTED", "WITHDRAWAL_SUCCEEDED"]


@pytest.mark.parametrize("status", WITHDRAWABLE)
async def test_a_rejected_withdrawal_returns_to_the_review_it_interrupted(
    sqlite_stack: Stack, status: CertificateStatus
) -> None:
    certificate = await make(sqlite_stack, status)
    await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id)
    after = await decide(sqlite_stack, certificate, SandboxDecision.REJECT)
    assert after.status is status
    assert after.last_withdrawal is not None
    assert after.last_withdrawal.status is WithdrawalStatus.FAILED
    assert after.last_withdrawal.failure_reason is WithdrawalFailureReason.CA_REJECTED
    # The CA resumed the interrupted review: approving it now moves the certificate on.
    resumed = await decide(sqlite_stack, after, SandboxDecision.APPROVE)
    assert resumed.status is not status


async def test_the_ca_issuing_during_the_withdrawal_review_fails_it_as_already_approved(
    sqlite_stack: Stack,
) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id)
    after = await decide(sqlite_stack, certificate, SandboxDecision.ISSUE)
    assert after.status is S.ISSUED and after.issued_at is not None
    assert after.expires_at is not None and after.expires_at.year == after.issued_at.year + 1
    assert after.last_withdrawal is not None
    assert after.last_withdrawal.status is WithdrawalStatus.FAILED
    assert after.last_withdrawal.failure_reason is WithdrawalFailureReason.CA_ALREADY_APPROVED


async def test_a_withdrawal_the_ca_had_already_approved_is_a_typed_result_and_is_recorded(
    sqlite_stack: Stack,
) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    assert certificate.ca_order_id is not None
    # The CA issues; the service has not polled yet and still thinks the review is pending.
    assert await sqlite_stack.ca.decide(certificate.ca_order_id, SandboxDecision.ISSUE)
    result = await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id)
    assert isinstance(result, CaAlreadyApproved)
    assert result.certificate.status is S.ISSUED
    assert result.withdrawal.status is WithdrawalStatus.FAILED
    assert result.withdrawal.failure_reason is WithdrawalFailureReason.CA_ALREADY_APPROVED
    stored = await load(sqlite_stack, certificate.id)
    assert stored.last_withdrawal == result.withdrawal
    # The CA's own ISSUED decision, polled later, changes nothing more.
    await sqlite_stack.worker.run_once()
    assert (await load(sqlite_stack, certificate.id)).version == stored.version


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (S.CA_VERIFYING_DELETION, WithdrawalBlockReason.DELETION_REQUESTED),
        (S.CA_VERIFYING_REVOCATION, WithdrawalBlockReason.REVOCATION_REQUESTED),
    ],
)
async def test_withdrawal_is_refused_once_deletion_or_revocation_is_requested(
    sqlite_stack: Stack, status: CertificateStatus, reason: WithdrawalBlockReason
) -> None:
    certificate = await make(sqlite_stack, status)
    result = await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id)
    assert isinstance(result, WithdrawalNotAllowed) and result.reason is reason
    assert (await load(sqlite_stack, certificate.id)).version == certificate.version


@pytest.mark.parametrize(
    "status",
    [
        s
        for s in CertificateStatus
        if s not in WITHDRAWABLE and s not in (S.CA_VERIFYING_DELETION, S.CA_VERIFYING_REVOCATION)
    ],
)
async def test_withdrawal_in_any_other_status_is_an_invalid_state(
    sqlite_stack: Stack, status: CertificateStatus
) -> None:
    certificate = await make(sqlite_stack, status)
    result = await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id)
    assert isinstance(result, InvalidState)
    assert result.certificate.status is status
    assert result.allowed == frozenset(WITHDRAWABLE)


async def test_unknown_and_other_tenants_certificates_are_not_found(sqlite_stack: Stack) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    service = sqlite_stack.service
    assert await service.withdraw(sqlite_stack.other_tenant, certificate.id) == NotFound(
        certificate.id
    )
    assert await service.withdraw(sqlite_stack.tenant, "nope") == NotFound("nope")
    assert isinstance(await service.delete(sqlite_stack.other_tenant, certificate.id), NotFound)
    assert (await load(sqlite_stack, certificate.id)).version == certificate.version


async def test_an_unreachable_ca_changes_nothing(sqlite_stack: Stack) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    await sqlite_stack.ca.set_reachable(False)
    result = await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id, "k1")
    assert isinstance(result, CaUnreachable) and result.retry_after_seconds > 0
    after = await load(sqlite_stack, certificate.id)
    assert after.version == certificate.version and after.last_withdrawal is None
    await sqlite_stack.ca.set_reachable(True)
    # The key was not stored with the error: the retry is evaluated afresh.
    retry = await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id, "k1")
    assert isinstance(retry, WithdrawalSubmitted)


async def test_a_retry_with_the_same_key_returns_the_first_answer(sqlite_stack: Stack) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    service, tenant = sqlite_stack.service, sqlite_stack.tenant
    first = await service.withdraw(tenant, certificate.id, "retry-1")
    assert isinstance(first, WithdrawalSubmitted)
    await decide(sqlite_stack, certificate, SandboxDecision.APPROVE)
    again = await service.withdraw(tenant, certificate.id, "retry-1")
    assert isinstance(again, WithdrawalSubmitted)
    assert again.withdrawal.id == first.withdrawal.id
    # ... with the certificate as it is now.
    assert again.certificate.status is S.PENDING_APPLICATION
    other = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION, "other")
    reuse = await service.withdraw(tenant, other.id, "retry-1")
    assert isinstance(reuse, InvalidInput) and reuse.field == "idempotency_key"
    # Keys are scoped to the tenant.
    assert isinstance(
        await service.withdraw(sqlite_stack.other_tenant, other.id, "retry-1"), NotFound
    )


async def test_keys_stored_before_the_operation_was_renamed_still_answer_retries(
    sqlite_stack: Stack,
) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    service, tenant = sqlite_stack.service, sqlite_stack.tenant
    first = await service.withdraw(tenant, certificate.id, "before-0004")
    assert isinstance(first, WithdrawalSubmitted)

    def migrate(connection: Connection, step: Callable[[Config, str], None], to: str) -> None:
        config = alembic_config(str(sqlite_stack.engine.url))
        config.attributes["connection"] = connection
        step(config, to)

    # Back to the revision that stored the GraphQL field's name, then up again.
    async with sqlite_stack.engine.begin() as connection:
        await connection.run_sync(migrate, command.downgrade, "0003")
        stored = await connection.scalar(text("SELECT operation FROM idempotency_keys"))
        assert stored == "withdrawApplication"
        await connection.run_sync(migrate, command.upgrade, "head")

    again = await service.withdraw(tenant, certificate.id, "before-0004")
    assert isinstance(again, WithdrawalSubmitted)
    assert again.withdrawal.id == first.withdrawal.id


@pytest.mark.parametrize("key", ["", "x" * 129])
async def test_idempotency_keys_have_1_to_128_characters(sqlite_stack: Stack, key: str) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    result = await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id, key)
    assert isinstance(result, InvalidInput) and result.field == "idempotency_key"


async def test_verify_domain_records_a_request_and_bumps_the_version_only(
    sqlite_stack: Stack,
) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    result = await sqlite_stack.service.verify_domain(sqlite_stack.tenant, certificate.id)
    assert isinstance(result, CertificateChanged)
    assert result.certificate.status is S.PENDING_DOMAIN_VERIFICATION
    assert result.certificate.version == certificate.version + 1
    assert (await history(sqlite_stack, certificate.id))[-1] == (
        EventKind.DOMAIN_VERIFICATION_REQUESTED,
        "PENDING_DOMAIN_VERIFICATION",
        "PENDING_DOMAIN_VERIFICATION",
    )


async def test_apply_publishes_one_txt_record_per_domain_and_checks_input(
    sqlite_stack: Stack,
) -> None:
    service, tenant = sqlite_stack.service, sqlite_stack.tenant
    created = await service.create_certificate(
        tenant,
        name="multi",
        type=CertificateType.OV,
        domain_type=DomainType.MULTIPLE,
        brand="GeoTrust",
        domain_quota=3,
        validity_years=1,
    )
    assert isinstance(created, CertificateChanged)
    cid = created.certificate.id
    no_org = await service.apply(
        tenant, cid, Application("a.example.com", ["b.example.com"], ValidationMethod.DNS)
    )
    assert isinstance(no_org, InvalidInput) and no_org.field == "input.organization"
    applied = await service.apply(
        tenant,
        cid,
        Application("A.example.com.", ["b.example.com"], ValidationMethod.DNS, "Acme", "de"),
    )
    assert isinstance(applied, CertificateChanged)
    certificate = applied.certificate
    assert certificate.status is S.PENDING_DOMAIN_VERIFICATION
    assert certificate.domains == ("a.example.com", "b.example.com")
    assert certificate.domain_validation is not None
    assert [r.name for r in certificate.domain_validation.records] == [
        "_acme-challenge.a.example.com",
        "_acme-challenge.b.example.com",
    ]
    assert {r.type for r in certificate.domain_validation.records} == {"TXT"}
    over = await service.add_domains(tenant, cid, ["c.example.com", "d.example.com"])
    assert isinstance(over, InvalidInput) and over.field == "domains"


async def test_added_domains_get_records_once_the_ca_approves_them(sqlite_stack: Stack) -> None:
    certificate = await make(sqlite_stack, S.CA_VERIFYING_DOMAIN_ADDITION)
    assert certificate.pending_domains == ("api.web.example.com",)
    after = await decide(sqlite_stack, certificate, SandboxDecision.APPROVE)
    assert after.status is S.PENDING_DOMAIN_VERIFICATION
    assert after.additional_domains == ("www.web.example.com", "api.web.example.com")
    assert after.domain_validation is not None
    assert len(after.domain_validation.records) == 3


async def test_refused_added_domains_are_dropped(sqlite_stack: Stack) -> None:
    certificate = await make(sqlite_stack, S.CA_VERIFYING_DOMAIN_ADDITION)
    after = await decide(sqlite_stack, certificate, SandboxDecision.REJECT)
    assert after.status is S.PENDING_DOMAIN_VERIFICATION
    assert after.additional_domains == ("www.web.example.com",)
    assert after.pending_domains == ()


async def test_unreachable_ca_stops_the_worker_and_it_resumes_afterwards(
    sqlite_stack: Stack,
) -> None:
    certificate = await make(sqlite_stack, S.PENDING_DOMAIN_VERIFICATION)
    await sqlite_stack.service.withdraw(sqlite_stack.tenant, certificate.id)
    assert certificate.ca_order_id is not None
    assert await sqlite_stack.ca.decide(certificate.ca_order_id, SandboxDecision.APPROVE)
    await sqlite_stack.ca.set_reachable(False)
    with pytest.raises(CaUnavailable):
        await sqlite_stack.worker.run_once()
    assert (await load(sqlite_stack, certificate.id)).status is S.CA_VERIFYING_WITHDRAWAL
    await sqlite_stack.ca.set_reachable(True)
    # Claimed certificates come due again after the poll interval.
    for _ in range(100):
        await sqlite_stack.worker.run_once()
        if (await load(sqlite_stack, certificate.id)).status is S.PENDING_APPLICATION:
            break
        await asyncio.sleep(0.02)
    assert (await load(sqlite_stack, certificate.id)).status is S.PENDING_APPLICATION
