"""Domain layer: the certificate service, one method per use case, each returning an outcome.

Every change follows one shape: read the certificate, check the rules, ask the CA (outside any
transaction), then write with a compare-and-set on `version`. When another writer got there
first, the use case starts over from a fresh read, so concurrent requests serialise cleanly.
Each CA request carries an idempotency key made of the certificate, the version read and the
operation: however often it is retried, or by however many processes, the CA acts once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain import lifecycle
from domain.ca import CaUnavailable, OrderRequest, WithdrawalAnswer
from domain.decisions import apply_decision
from domain.model import (
    Certificate,
    CertificateId,
    Organization,
    TenantId,
    Withdrawal,
)
from domain.ports import (
    CertificateAuthority,
    ChangePublisher,
    Clock,
    StatusChange,
    UnitOfWork,
    UnitOfWorkFactory,
)
from domain.results import (
    ApplyResult,
    CaAlreadyApproved,
    CaUnreachable,
    CertificateChanged,
    ChangeResult,
    CreateResult,
    InvalidInput,
    InvalidState,
    NotFound,
    WithdrawalNotAllowed,
    WithdrawalSubmitted,
    WithdrawResult,
)
from domain.statuses import (
    CertificateAction,
    CertificateStatus,
    CertificateType,
    DomainType,
    ValidationMethod,
    WithdrawalBlockReason,
)
from domain.validation import (
    InputProblem,
    check_domains,
    check_new_certificate,
    check_organization,
)

log = logging.getLogger(__name__)
S = CertificateStatus
WITHDRAW = "withdrawApplication"
MAX_KEY = 128
# How often a use case re-reads and retries after losing a compare-and-set race.
ATTEMPTS = 20


class SandboxDecision(StrEnum):
    APPROVE = "APPROVE"
    REJECT = "REJECT"
    ISSUE = "ISSUE"


SANDBOX_STATUSES = {
    SandboxDecision.APPROVE: lifecycle.CA_PENDING,
    SandboxDecision.REJECT: lifecycle.CA_PENDING,
    SandboxDecision.ISSUE: lifecycle.ISSUABLE,
}


@dataclass(frozen=True, slots=True)
class Step:
    """What a simple change does once its rules pass: ask the CA (with the order id and an
    idempotency key), if there is anything to ask, then change the certificate."""

    change: Callable[[Certificate, datetime], None]
    ask_ca: Callable[[str, str], Awaitable[object]] | None = None
    operation: str = ""


@dataclass(frozen=True, slots=True)
class Application:
    domain: str
    additional_domains: list[str]
    method: ValidationMethod
    organization_name: str | None = None
    organization_country: str | None = None


def status_changes(certificate: Certificate) -> list[StatusChange]:
    return [
        StatusChange(
            tenant_id=certificate.tenant_id,
            certificate_id=certificate.id,
            previous_status=event.from_status,
            status=event.to_status,
            changed_at=event.at,
            version=event.version,
        )
        for event in certificate.new_events
        if event.from_status is not event.to_status
    ]


class CertificateService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        ca: CertificateAuthority,
        clock: Clock,
        publisher: ChangePublisher,
    ) -> None:
        self._uow = uow
        self._ca = ca
        self._clock = clock
        self._publisher = publisher

    # ---- plumbing

    def _unsupported(
        self, type: CertificateType, method: ValidationMethod | None, field: str
    ) -> InvalidInput | None:
        """An application the CA in use cannot take: refused as input, before any order."""
        ca = self._ca
        if type not in ca.supported_types:
            kinds = "/".join(t.value for t in CertificateType if t in ca.supported_types)
            return InvalidInput(
                field,
                f"{ca.name} issues {kinds} certificates only: it validates domains, "
                f"not organizations, so it cannot issue {type.value} certificates.",
            )
        if method is not None and method not in ca.supported_methods:
            methods = ", ".join(m.value for m in ValidationMethod if m in ca.supported_methods)
            return InvalidInput(
                "input.validationMethod",
                f"{ca.name} validates domains with {methods} only.",
            )
        return None

    async def _load(self, tenant_id: TenantId, certificate_id: str) -> Certificate | None:
        async with self._uow() as uow:
            return await uow.certificates.get(tenant_id, CertificateId(certificate_id))

    async def _save(self, certificate: Certificate, expected_version: int) -> bool:
        async with self._uow(write=True) as uow:
            uow.certificates.save(certificate, expected_version)
            if not await uow.commit():
                return False
        await self._publisher.publish(status_changes(certificate))
        return True

    @staticmethod
    def _ca_key(certificate: Certificate, operation: str) -> str:
        """The idempotency key of a CA request: one per certificate version and operation, so
        a retry, or another process racing on the same version, never acts twice at the CA."""
        return f"{certificate.id}:{certificate.version}:{operation}"

    @staticmethod
    def _refuse(certificate: Certificate, action: CertificateAction, verb: str) -> InvalidState:
        return InvalidState(certificate, lifecycle.ACTION_STATUSES[action], verb)

    # ---- use cases

    async def create_certificate(
        self,
        tenant_id: TenantId,
        *,
        name: str,
        type: CertificateType,
        domain_type: DomainType,
        brand: str,
        domain_quota: int,
        validity_years: int,
    ) -> CreateResult:
        problem = check_new_certificate(name, brand, domain_type, domain_quota, validity_years)
        if problem:
            return InvalidInput(problem.field, problem.message)
        refused = self._unsupported(type, None, "input.type")
        if refused:
            return refused
        certificate = Certificate.create(
            tenant_id=tenant_id,
            name=name.strip(),
            type=type,
            domain_type=domain_type,
            brand=brand.strip(),
            domain_quota=domain_quota,
            validity_years=validity_years,
            now=self._clock.now(),
        )
        async with self._uow(write=True) as uow:
            uow.certificates.add(certificate)
            await uow.commit()
        await self._publisher.publish(status_changes(certificate))
        return CertificateChanged(certificate)

    async def apply(
        self, tenant_id: TenantId, certificate_id: str, application: Application
    ) -> ApplyResult:
        for _ in range(ATTEMPTS):
            certificate = await self._load(tenant_id, certificate_id)
            if certificate is None:
                return NotFound(certificate_id)
            if not certificate.allows(CertificateAction.APPLY):
                return self._refuse(certificate, CertificateAction.APPLY, "apply for")
            refused = self._unsupported(certificate.type, application.method, "input.certificateId")
            if refused:
                return refused
            domains = check_domains(
                application.domain,
                application.additional_domains,
                certificate.domain_type,
                certificate.domain_quota,
            )
            if isinstance(domains, InputProblem):
                return InvalidInput(domains.field, domains.message)
            organization = check_organization(
                certificate.type, application.organization_name, application.organization_country
            )
            if isinstance(organization, InputProblem):
                return InvalidInput(organization.field, organization.message)
            request = OrderRequest(
                # One order per certificate version: a retried submission finds the same order.
                reference=f"{certificate.id}:{certificate.version}",
                type=certificate.type,
                domains=domains,
                method=application.method,
                organization_name=organization[0] if organization else None,
                organization_country=organization[1] if organization else None,
                validity_years=certificate.validity_years,
            )
            try:
                placed = await self._ca.place_order(request)
            except CaUnavailable as error:
                return CaUnreachable(error.retry_after)
            expected = certificate.version
            certificate.apply(
                domain=domains[0],
                additional_domains=domains[1:],
                method=application.method,
                organization=Organization(*organization) if organization else None,
                records=placed.records,
                ca_order_id=placed.order_id,
                now=self._clock.now(),
            )
            if await self._save(certificate, expected):
                return CertificateChanged(certificate)
        raise RuntimeError("too much contention on one certificate")

    async def _change(
        self,
        tenant_id: TenantId,
        certificate_id: str,
        action: CertificateAction,
        verb: str,
        plan: Callable[[Certificate], Step | InvalidInput],
    ) -> ChangeResult:
        """The shape of a simple change: rules, then the CA's consent, then compare-and-set."""
        for _ in range(ATTEMPTS):
            certificate = await self._load(tenant_id, certificate_id)
            if certificate is None:
                return NotFound(certificate_id)
            if certificate.status not in lifecycle.ACTION_STATUSES[action]:
                return self._refuse(certificate, action, verb)
            step = plan(certificate)
            if isinstance(step, InvalidInput):
                return step
            if step.ask_ca is not None:
                assert certificate.ca_order_id is not None
                key = self._ca_key(certificate, step.operation)
                try:
                    await step.ask_ca(certificate.ca_order_id, key)
                except CaUnavailable as error:
                    return CaUnreachable(error.retry_after)
            expected = certificate.version
            step.change(certificate, self._clock.now())
            if await self._save(certificate, expected):
                return CertificateChanged(certificate)
        raise RuntimeError("too much contention on one certificate")

    async def verify_domain(self, tenant_id: TenantId, certificate_id: str) -> ChangeResult:
        return await self._change(
            tenant_id,
            certificate_id,
            CertificateAction.VERIFY_DOMAIN,
            "verify the domain of",
            lambda _: Step(
                lambda c, now: c.request_domain_verification(now),
                lambda order_id, key: self._ca.request_domain_check(order_id, key=key),
                "domain-check",
            ),
        )

    async def add_domains(
        self, tenant_id: TenantId, certificate_id: str, domains: list[str]
    ) -> ChangeResult:
        def plan(certificate: Certificate) -> Step | InvalidInput:
            if certificate.domain_type is not DomainType.MULTIPLE:
                return InvalidInput(
                    "input.domains", "Only MULTIPLE certificates can cover more domains."
                )
            if not domains:
                return InvalidInput("input.domains", "Give at least one domain to add.")
            added = check_domains(
                "",
                domains,
                certificate.domain_type,
                certificate.domain_quota,
                existing=certificate.domains,
                primary_field="",
                additional_field="input.domains",
            )
            if isinstance(added, InputProblem):
                return InvalidInput(added.field, added.message)
            return Step(
                lambda c, now: c.add_domains(added, now),
                lambda order_id, key: self._ca.add_domains(order_id, added, key=key),
                "add-domains",
            )

        return await self._change(
            tenant_id, certificate_id, CertificateAction.ADD_DOMAINS, "add domains to", plan
        )

    async def withdraw(
        self, tenant_id: TenantId, certificate_id: str, idempotency_key: str | None = None
    ) -> WithdrawResult:
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_KEY:
            return InvalidInput(
                "input.idempotencyKey", f"An idempotency key has 1 to {MAX_KEY} characters."
            )
        for _ in range(ATTEMPTS):
            # The key's earlier answer and the certificate, in one unit of work.
            async with self._uow() as uow:
                replay = await self._replay(uow, tenant_id, certificate_id, idempotency_key)
                if replay is not None:
                    return replay
                certificate = await uow.certificates.get(tenant_id, CertificateId(certificate_id))
            if certificate is None:
                return NotFound(certificate_id)
            if certificate.status is S.CA_VERIFYING_DELETION:
                return WithdrawalNotAllowed(certificate, WithdrawalBlockReason.DELETION_REQUESTED)
            if certificate.status is S.CA_VERIFYING_REVOCATION:
                return WithdrawalNotAllowed(certificate, WithdrawalBlockReason.REVOCATION_REQUESTED)
            if not certificate.allows(CertificateAction.WITHDRAW_APPLICATION):
                # A request with the same key may have just won: answer as it was answered.
                async with self._uow() as uow:
                    replay = await self._replay(uow, tenant_id, certificate_id, idempotency_key)
                return replay or self._refuse(
                    certificate,
                    CertificateAction.WITHDRAW_APPLICATION,
                    "withdraw the application of",
                )
            assert certificate.ca_order_id is not None
            try:
                reply = await self._ca.request_withdrawal(
                    certificate.ca_order_id, key=self._ca_key(certificate, "withdrawal")
                )
            except CaUnavailable as error:
                return CaUnreachable(error.retry_after)
            expected = certificate.version
            now = self._clock.now()
            if reply.answer is WithdrawalAnswer.ALREADY_ISSUED:
                failed = certificate.refuse_withdrawal_as_issued(
                    reply.issued_at or now, now, reply.document
                )
                if await self._save(certificate, expected):
                    return CaAlreadyApproved(certificate, failed)
                continue
            withdrawal = certificate.request_withdrawal(now)
            if await self._save_withdrawal(certificate, expected, idempotency_key, withdrawal):
                return WithdrawalSubmitted(certificate, withdrawal)
        raise RuntimeError("too much contention on one certificate")

    async def _save_withdrawal(
        self,
        certificate: Certificate,
        expected: int,
        key: str | None,
        withdrawal: Withdrawal,
    ) -> bool:
        async with self._uow(write=True) as uow:
            uow.certificates.save(certificate, expected)
            if key is not None:
                uow.idempotency.remember(
                    certificate.tenant_id, WITHDRAW, key, certificate.id, withdrawal.id
                )
            if not await uow.commit():
                return False
        await self._publisher.publish(status_changes(certificate))
        return True

    @staticmethod
    async def _replay(
        uow: UnitOfWork, tenant_id: TenantId, certificate_id: str, key: str | None
    ) -> WithdrawResult | None:
        if key is None:
            return None
        stored = await uow.idempotency.find(tenant_id, WITHDRAW, key)
        if stored is None:
            return None
        if stored.certificate_id != certificate_id:
            return InvalidInput(
                "input.idempotencyKey",
                "This idempotency key was used for another certificate.",
            )
        certificate = await uow.certificates.get(tenant_id, stored.certificate_id)
        withdrawal = await uow.certificates.get_withdrawal(stored.withdrawal_id)
        if certificate is None or withdrawal is None:
            return None
        return WithdrawalSubmitted(certificate, withdrawal)

    async def revoke(
        self, tenant_id: TenantId, certificate_id: str, reason: str | None
    ) -> ChangeResult:
        if reason is not None and len(reason) > 500:
            return InvalidInput("input.reason", "A reason has at most 500 characters.")
        return await self._change(
            tenant_id,
            certificate_id,
            CertificateAction.REVOKE,
            "revoke",
            lambda _: Step(
                lambda c, now: c.request_revocation(reason, now),
                lambda order_id, key: self._ca.request_revocation(order_id, reason, key=key),
                "revocation",
            ),
        )

    async def delete(self, tenant_id: TenantId, certificate_id: str) -> ChangeResult:
        def plan(certificate: Certificate) -> Step:
            if certificate.status in lifecycle.DELETABLE_AT_ONCE:
                # Nothing at the CA to stop: gone at once.
                return Step(lambda c, now: c.delete_at_once(now))
            return Step(
                lambda c, now: c.request_deletion(now),
                lambda order_id, key: self._ca.request_deletion(order_id, key=key),
                "deletion",
            )

        return await self._change(
            tenant_id, certificate_id, CertificateAction.DELETE, "delete", plan
        )

    async def check_sandbox_decision(
        self, tenant_id: TenantId, certificate_id: str, decision: SandboxDecision
    ) -> Certificate | NotFound | InvalidState:
        """Whether the simulated CA may be told `decision` about this certificate now."""
        certificate = await self._load(tenant_id, certificate_id)
        if certificate is None:
            return NotFound(certificate_id)
        allowed = SANDBOX_STATUSES[decision]
        if certificate.status not in allowed or certificate.ca_order_id is None:
            return InvalidState(certificate, allowed, f"{decision.lower()} (sandbox)")
        return certificate

    # ---- CA decisions, applied by the background worker

    async def sync_with_ca(self, certificate_ids: Sequence[CertificateId]) -> int:
        """Apply the CA's new decisions to these certificates; returns how many changed.

        Raises `CaUnavailable` when the CA cannot be asked (the worker backs off)."""
        async with self._uow() as uow:
            loaded = await uow.certificates.get_many_any_tenant(certificate_ids)
        watched = [c for c in loaded if c.ca_order_id and c.status in lifecycle.CA_PENDING]
        if not watched:
            return 0
        news = await self._ca.decisions(
            {c.ca_order_id: c.ca_cursor for c in watched if c.ca_order_id}
        )
        changed = 0
        for certificate in watched:
            decisions = news.get(certificate.ca_order_id or "", ())
            if not decisions:
                continue
            expected = certificate.version
            for decision in decisions:
                apply_decision(certificate, decision, self._clock.now())
                certificate.ca_cursor = decision.seq
            # A lost race means another process applied them; the next round re-reads.
            if await self._save(certificate, expected):
                changed += 1
        return changed

    async def expire(self, certificate_ids: Sequence[CertificateId]) -> int:
        """Mark issued certificates past their expiry as EXPIRED."""
        changed = 0
        async with self._uow() as uow:
            loaded = await uow.certificates.get_many_any_tenant(certificate_ids)
        for certificate in loaded:
            now = self._clock.now()
            if (
                certificate.status is not S.ISSUED
                or certificate.expires_at is None
                or certificate.expires_at > now
            ):
                continue
            expected = certificate.version
            certificate.expire(now)
            if await self._save(certificate, expected):
                changed += 1
        return changed
