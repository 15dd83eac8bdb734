"""Domain layer: the lifecycle commands other than withdrawal (create, apply, verify the
domain, add domains, revoke, delete), each one change of the shape in `domain.use_case`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from domain import lifecycle
from domain.ca import OrderPlaced, OrderRequest
from domain.model import Certificate, Organization, TenantId
from domain.results import (
    CertificateChanged,
    ChangeRefused,
    ChangeResult,
    CreateResult,
    InvalidInput,
)
from domain.statuses import CertificateAction, CertificateType, DomainType, ValidationMethod
from domain.use_case import Step, UseCase, order_of, plain_step, refuse, status_changes
from domain.validation import (
    InputProblem,
    check_domains,
    check_new_certificate,
    check_organization,
)

MAX_REASON = 500
A = CertificateAction
ChangeStep = Step[object, ChangeResult]


@dataclass(frozen=True, slots=True)
class Application:
    domain: str
    additional_domains: list[str]
    method: ValidationMethod
    organization_name: str | None = None
    organization_country: str | None = None


def invalid(problem: InputProblem) -> InvalidInput:
    return InvalidInput(problem.field, problem.message)


class CertificateCommands(UseCase):
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
                "validation_method", f"{ca.name} validates domains with {methods} only."
            )
        return None

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
            return invalid(problem)
        refused = self._unsupported(type, None, "type")
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
    ) -> ChangeResult:
        async def rules(
            certificate: Certificate,
        ) -> Step[OrderPlaced, ChangeResult] | ChangeRefused:
            if not certificate.allows(A.APPLY):
                return refuse(certificate, A.APPLY, "apply for")
            order = self._order(certificate, application)
            if not isinstance(order, OrderRequest):
                return order
            return Step(
                lambda c, placed, now: applied(c, order, placed, now),
                lambda _c, _key: self._ca.place_order(order),
            )

        return await self._change(tenant_id, certificate_id, rules)

    def _order(
        self, certificate: Certificate, application: Application
    ) -> OrderRequest | InvalidInput:
        """The order for the CA, once the application passed every check."""
        refused = self._unsupported(certificate.type, application.method, "certificate_id")
        if refused:
            return refused
        domains = check_domains(
            application.domain,
            application.additional_domains,
            certificate.domain_type,
            certificate.domain_quota,
        )
        if isinstance(domains, InputProblem):
            return invalid(domains)
        organization = check_organization(
            certificate.type, application.organization_name, application.organization_country
        )
        if isinstance(organization, InputProblem):
            return invalid(organization)
        return OrderRequest(
            # One order per certificate version: a retried submission finds the same order.
            reference=f"{certificate.id}:{certificate.version}",
            type=certificate.type,
            domains=domains,
            method=application.method,
            organization_name=organization[0] if organization else None,
            organization_country=organization[1] if organization else None,
            validity_years=certificate.validity_years,
        )

    async def _simple(
        self,
        tenant_id: TenantId,
        certificate_id: str,
        action: CertificateAction,
        verb: str,
        plan: Callable[[Certificate], ChangeStep | InvalidInput],
    ) -> ChangeResult:
        """A change allowed in the statuses the lifecycle lists for `action`."""

        async def rules(certificate: Certificate) -> ChangeStep | ChangeRefused:
            if certificate.status not in lifecycle.ACTION_STATUSES[action]:
                return refuse(certificate, action, verb)
            return plan(certificate)

        return await self._change(tenant_id, certificate_id, rules)

    async def verify_domain(self, tenant_id: TenantId, certificate_id: str) -> ChangeResult:
        return await self._simple(
            tenant_id,
            certificate_id,
            A.VERIFY_DOMAIN,
            "verify the domain of",
            lambda _: plain_step(
                lambda c, now: c.request_domain_verification(now),
                lambda c, key: self._ca.request_domain_check(order_of(c), key=key),
                "domain-check",
            ),
        )

    async def add_domains(
        self, tenant_id: TenantId, certificate_id: str, domains: list[str]
    ) -> ChangeResult:
        def plan(certificate: Certificate) -> ChangeStep | InvalidInput:
            if certificate.domain_type is not DomainType.MULTIPLE:
                return InvalidInput("domains", "Only MULTIPLE certificates can cover more domains.")
            if not domains:
                return InvalidInput("domains", "Give at least one domain to add.")
            added = check_domains(
                "",
                domains,
                certificate.domain_type,
                certificate.domain_quota,
                existing=certificate.domains,
                primary_field="",
                additional_field="domains",
            )
            if isinstance(added, InputProblem):
                return invalid(added)
            return plain_step(
                lambda c, now: c.add_domains(added, now),
                lambda c, key: self._ca.add_domains(order_of(c), added, key=key),
                "add-domains",
            )

        return await self._simple(tenant_id, certificate_id, A.ADD_DOMAINS, "add domains to", plan)

    async def revoke(
        self, tenant_id: TenantId, certificate_id: str, reason: str | None
    ) -> ChangeResult:
        if reason is not None and len(reason) > MAX_REASON:
            return InvalidInput("reason", f"A reason has at most {MAX_REASON} characters.")
        return await self._simple(
            tenant_id,
            certificate_id,
            A.REVOKE,
            "revoke",
            lambda _: plain_step(
                lambda c, now: c.request_revocation(reason, now),
                lambda c, key: self._ca.request_revocation(order_of(c), reason, key=key),
                "revocation",
            ),
        )

    async def delete(self, tenant_id: TenantId, certificate_id: str) -> ChangeResult:
        def plan(certificate: Certificate) -> ChangeStep:
            if certificate.status in lifecycle.DELETABLE_AT_ONCE:
                # Nothing at the CA to stop: gone at once.
                return plain_step(lambda c, now: c.delete_at_once(now))
            return plain_step(
                lambda c, now: c.request_deletion(now),
                lambda c, key: self._ca.request_deletion(order_of(c), key=key),
                "deletion",
            )

        return await self._simple(tenant_id, certificate_id, A.DELETE, "delete", plan)


def applied(
    certificate: Certificate, order: OrderRequest, placed: OrderPlaced | None, now: datetime
) -> CertificateChanged:
    assert placed is not None
    name, country = order.organization_name, order.organization_country
    certificate.apply(
        domain=order.domains[0],
        additional_domains=order.domains[1:],
        method=order.method,
        organization=Organization(name, country) if name and country else None,
        records=placed.records,
        ca_order_id=placed.order_id,
        now=now,
    )
    return CertificateChanged(certificate)
