"""Server layer: demo and bulk data, made through the real service and the simulated CA."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from domain.commands import Application
from domain.model import CertificateId, TenantId
from domain.results import CertificateChanged, WithdrawalSubmitted
from domain.sandbox import Sandbox, SandboxDecided, SandboxDecision
from domain.service import CertificateService
from domain.statuses import CertificateStatus, CertificateType, DomainType, ValidationMethod
from server.ca.simulated import SimulatedCa
from server.container import Container
from server.persistence.mapping import certificates
from server.persistence.unit_of_work import SqlUnitOfWorkFactory

S = CertificateStatus
BRANDS = ("DigiCert", "GeoTrust", "Let's Encrypt", "Sectigo", "GlobalSign")


@dataclass(frozen=True, slots=True)
class Recipe:
    """How a certificate reaches a status through the public operations only."""

    type: CertificateType
    domain_type: DomainType
    steps: tuple[str, ...]


RECIPES: dict[CertificateStatus, Recipe] = {
    S.PENDING_APPLICATION: Recipe(CertificateType.DV, DomainType.SINGLE, ()),
    S.PENDING_DOMAIN_VERIFICATION: Recipe(CertificateType.DV, DomainType.SINGLE, ("apply",)),
    S.PENDING_ORGANIZATION_VERIFICATION: Recipe(
        CertificateType.OV, DomainType.SINGLE, ("apply", "verify", "APPROVE")
    ),
    S.CA_VERIFYING_DOMAIN_ADDITION: Recipe(
        CertificateType.DV, DomainType.MULTIPLE, ("apply", "add")
    ),
    S.CA_VERIFYING_WITHDRAWAL: Recipe(CertificateType.DV, DomainType.SINGLE, ("apply", "withdraw")),
    S.ISSUED: Recipe(CertificateType.DV, DomainType.SINGLE, ("apply", "verify", "APPROVE")),
    S.REJECTED: Recipe(CertificateType.EV, DomainType.SINGLE, ("apply", "verify", "REJECT")),
    S.CA_VERIFYING_REVOCATION: Recipe(
        CertificateType.DV, DomainType.SINGLE, ("apply", "ISSUE", "revoke")
    ),
    S.REVOKED: Recipe(
        CertificateType.DV, DomainType.SINGLE, ("apply", "ISSUE", "revoke", "APPROVE")
    ),
    S.CA_VERIFYING_DELETION: Recipe(
        CertificateType.OV, DomainType.WILDCARD, ("apply", "ISSUE", "delete")
    ),
    S.DELETED: Recipe(CertificateType.DV, DomainType.SINGLE, ("delete",)),
    S.EXPIRED: Recipe(CertificateType.DV, DomainType.SINGLE, ("apply", "ISSUE", "expire")),
}


class SeedError(RuntimeError):
    pass


async def create_for(
    service: CertificateService, tenant_id: TenantId, recipe: Recipe, *, name: str, brand: str
) -> CertificateId:
    """A new certificate of the type and domain type `recipe` starts from."""
    multiple = recipe.domain_type is DomainType.MULTIPLE
    created = await service.create_certificate(
        tenant_id,
        name=name,
        type=recipe.type,
        domain_type=recipe.domain_type,
        brand=brand,
        domain_quota=5 if multiple else 1,
        validity_years=1,
    )
    if not isinstance(created, CertificateChanged):
        raise SeedError(f"create: {created}")
    return created.certificate.id


async def user_step(
    service: CertificateService,
    tenant_id: TenantId,
    certificate_id: CertificateId,
    recipe: Recipe,
    step: str,
    domain: str,
) -> bool:
    """Take `step` when it is one of the user's operations (apply, verify, add, withdraw,
    revoke, delete); False for the steps of the CA and of time, which callers take themselves."""
    outcome: object
    match step:
        case "apply":
            wildcard = recipe.domain_type is DomainType.WILDCARD
            multiple = recipe.domain_type is DomainType.MULTIPLE
            needs_org = recipe.type is not CertificateType.DV
            outcome = await service.apply(
                tenant_id,
                certificate_id,
                Application(
                    domain=f"*.{domain}" if wildcard else domain,
                    additional_domains=[f"www.{domain}"] if multiple else [],
                    method=ValidationMethod.DNS,
                    organization_name="Example Ltd" if needs_org else None,
                    organization_country="GB" if needs_org else None,
                ),
            )
        case "verify":
            outcome = await service.verify_domain(tenant_id, certificate_id)
        case "add":
            outcome = await service.add_domains(tenant_id, certificate_id, [f"api.{domain}"])
        case "withdraw":
            outcome = await service.withdraw(tenant_id, certificate_id)
        case "revoke":
            outcome = await service.revoke(tenant_id, certificate_id, "key compromise drill")
        case "delete":
            outcome = await service.delete(tenant_id, certificate_id)
        case _:
            return False
    if not isinstance(outcome, CertificateChanged | WithdrawalSubmitted):
        raise SeedError(f"{step}: {outcome}")
    return True


async def sandbox_step(
    service: CertificateService,
    sandbox: Sandbox,
    tenant_id: TenantId,
    certificate_id: CertificateId,
    step: str,
) -> None:
    """The simulated CA decides `step` (APPROVE, REJECT, ISSUE) and the service syncs it in."""
    decided = await sandbox.decide(tenant_id, certificate_id, SandboxDecision(step))
    if not isinstance(decided, SandboxDecided):
        raise SeedError(f"{step}: {decided}")
    await service.sync_with_ca([certificate_id])


async def drive_to(
    service: CertificateService,
    sandbox: Sandbox,
    tenant_id: TenantId,
    status: CertificateStatus,
    *,
    name: str,
    domain: str,
    brand: str = "DigiCert",
    present: CertificateService | None = None,
) -> CertificateId:
    """Create a certificate and take it to `status` through the service and the sandbox CA.

    EXPIRED needs a past: pass a `service` and `sandbox` whose clock runs years behind, and the
    `present` service that then finds the certificate expired."""
    recipe = RECIPES[status]
    certificate_id = await create_for(service, tenant_id, recipe, name=name, brand=brand)
    for step in recipe.steps:
        if await user_step(service, tenant_id, certificate_id, recipe, step, domain):
            continue
        if step == "expire":
            await (present or service).expire([certificate_id])
        else:
            await sandbox_step(service, sandbox, tenant_id, certificate_id, step)
    return certificate_id


def demo_plan(count_per_status: int = 1) -> list[tuple[CertificateStatus, str, str]]:
    """(status, name, domain) for a demo set with every status."""
    plan = []
    for status in CertificateStatus:
        slug = status.value.lower().replace("_", "-")
        for n in range(count_per_status):
            suffix = f"-{n + 1}" if count_per_status > 1 else ""
            plan.append((status, f"{status.label}{suffix}", f"{slug}{suffix}.example.com"))
    return plan


def bulk_plan(count: int, seed: int = 7) -> list[tuple[CertificateStatus, str, str]]:
    rng = random.Random(seed)
    statuses = list(CertificateStatus)
    return [
        (rng.choice(statuses), f"cert-{n:07d}", f"host{n}.bulk{n % 97}.example.org")
        for n in range(count)
    ]


class ShiftedClock:
    """A clock running `offset` from the wall clock: demo data with a past (EXPIRED)."""

    def __init__(self, offset: timedelta) -> None:
        self._offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset


async def seed(
    container: Container,
    *,
    tenant_name: str,
    count: int | None,
    advance: Callable[[int], None] = lambda _: None,
) -> int:
    """Seed `count` certificates (random statuses), or the demo set when `count` is None.

    The demo set is added once per tenant: a tenant that has certificates is left alone, so
    `make run` can seed on every start. Returns how many certificates were made."""
    sim_ca, sandbox = container.sim_ca, container.sandbox
    assert sim_ca is not None and sandbox is not None, "seeding drives the simulated CA"
    tenant = await container.tenants.ensure_tenant(tenant_name)
    if count is None:
        counted = select(func.count()).where(certificates.c.tenant_id == tenant.id)
        existing = await container.db.read(lambda connection: connection.scalar(counted))
        if existing:
            return 0
    plan = demo_plan(2) if count is None else bulk_plan(count)
    past_clock = ShiftedClock(timedelta(days=-800))
    past_ca = SimulatedCa(sim_ca.book, past_clock.now)
    past_uow = SqlUnitOfWorkFactory(container.db, past_clock.now)
    past = CertificateService(past_uow, past_ca, past_clock, container.publisher)
    past_sandbox = Sandbox(past_uow, past_ca)
    for number, (status, name, domain) in enumerate(plan):
        expired = status is S.EXPIRED
        await drive_to(
            past if expired else container.service,
            past_sandbox if expired else sandbox,
            tenant.id,
            status,
            name=name,
            domain=domain,
            brand=BRANDS[number % len(BRANDS)],
            present=container.service,
        )
        advance(1)
    return len(plan)
