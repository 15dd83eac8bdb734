"""Resolver layer: the Mutation root; each mutation maps a domain outcome onto a result union."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar, assert_never

import strawberry

from domain import results
from domain.commands import Application
from domain.service import CertificateService
from resolvers import fields
from resolvers.context import Context
from resolvers.enums import CertificateType, DomainType, ValidationMethod
from resolvers.errors import (
    CaAlreadyApprovedError,
    CaUnavailableError,
    CertificateNotFoundError,
    InvalidCertificateStateError,
    ValidationError,
    WithdrawalNotAllowedError,
)
from resolvers.ids import CERTIFICATE, local_id
from resolvers.types import Certificate, Withdrawal

Outcome = TypeVar("Outcome")
Answer = TypeVar("Answer")

# ---- inputs


@strawberry.input
class CreateCertificateInput:
    name: str
    type: CertificateType
    domain_type: DomainType
    brand: str = strawberry.field(description="The CA brand, e.g. DigiCert, Let's Encrypt.")
    domain_quota: int = strawberry.field(
        description="How many domains the certificate may cover (1 for SINGLE and WILDCARD)."
    )
    validity_years: int


@strawberry.input
class OrganizationInput:
    name: str
    country: str = strawberry.field(description="ISO 3166-1 alpha-2 country code.")


@strawberry.input
class ApplyForCertificateInput:
    certificate_id: strawberry.ID
    domain: str
    additional_domains: list[str] | None = None
    validation_method: ValidationMethod
    organization: OrganizationInput | None = strawberry.field(
        default=None, description="Required for OV and EV certificates."
    )


@strawberry.input
class WithdrawApplicationInput:
    certificate_id: strawberry.ID
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="A retry with the same key returns the first answer instead of acting "
        "twice (1 to 128 characters).",
    )


@strawberry.input
class CertificateIdInput:
    certificate_id: strawberry.ID


@strawberry.input
class AddDomainsInput:
    certificate_id: strawberry.ID
    domains: list[str]


@strawberry.input
class RevokeCertificateInput:
    certificate_id: strawberry.ID
    reason: str | None = None


# ---- successes and result unions


@strawberry.type
class CreateCertificateSuccess:
    certificate: Certificate


@strawberry.type
class ApplyForCertificateSuccess:
    certificate: Certificate


@strawberry.type
class CertificateChangeSuccess:
    certificate: Certificate


@strawberry.type
class WithdrawApplicationSuccess:
    certificate: Certificate = strawberry.field(description="Now in CA_VERIFYING_WITHDRAWAL.")
    withdrawal: Withdrawal
    message: str = strawberry.field(
        description="Request for canceling the application submitted successfully."
    )


CreateCertificateResult = Annotated[
    CreateCertificateSuccess | ValidationError, strawberry.union("CreateCertificateResult")
]
ApplyForCertificateResult = Annotated[
    ApplyForCertificateSuccess
    | CertificateNotFoundError
    | InvalidCertificateStateError
    | ValidationError
    | CaUnavailableError,
    strawberry.union("ApplyForCertificateResult"),
]
CertificateChangeResult = Annotated[
    CertificateChangeSuccess
    | CertificateNotFoundError
    | InvalidCertificateStateError
    | ValidationError
    | CaUnavailableError,
    strawberry.union("CertificateChangeResult"),
]
WithdrawApplicationResult = Annotated[
    WithdrawApplicationSuccess
    | CertificateNotFoundError
    | InvalidCertificateStateError
    | WithdrawalNotAllowedError
    | CaAlreadyApprovedError
    | CaUnavailableError
    | ValidationError,
    strawberry.union("WithdrawApplicationResult"),
]


# ---- outcome -> result


def create_result(outcome: results.CreateResult) -> CreateCertificateResult:
    match outcome:
        case results.CertificateChanged(certificate=certificate):
            return CreateCertificateSuccess(certificate=Certificate.from_model(certificate))
        case results.InvalidInput():
            return ValidationError.from_outcome(outcome)
        case _:
            assert_never(outcome)


def apply_result(outcome: results.ChangeResult, sent_id: str) -> ApplyForCertificateResult:
    if isinstance(outcome, results.CertificateChanged):
        return ApplyForCertificateSuccess(certificate=Certificate.from_model(outcome.certificate))
    return change_refused(outcome, sent_id)


def change_result(outcome: results.ChangeResult, sent_id: str) -> CertificateChangeResult:
    if isinstance(outcome, results.CertificateChanged):
        return CertificateChangeSuccess(certificate=Certificate.from_model(outcome.certificate))
    return change_refused(outcome, sent_id)


def change_refused(
    outcome: results.ChangeRefused, sent_id: str
) -> CertificateNotFoundError | InvalidCertificateStateError | ValidationError | CaUnavailableError:
    match outcome:
        case results.NotFound():
            return CertificateNotFoundError.for_id(sent_id)
        case results.InvalidState():
            return InvalidCertificateStateError.from_outcome(outcome)
        case results.InvalidInput():
            return ValidationError.from_outcome(outcome)
        case results.CaUnreachable():
            return CaUnavailableError.from_outcome(outcome)
        case _:
            assert_never(outcome)


def withdraw_result(outcome: results.WithdrawResult, sent_id: str) -> WithdrawApplicationResult:
    match outcome:
        case results.WithdrawalSubmitted():
            return WithdrawApplicationSuccess(
                certificate=Certificate.from_model(outcome.certificate),
                withdrawal=Withdrawal.from_model(outcome.withdrawal),
                message=outcome.message,
            )
        case results.WithdrawalNotAllowed():
            return WithdrawalNotAllowedError.from_outcome(outcome)
        case results.CaAlreadyApproved():
            return CaAlreadyApprovedError.from_outcome(outcome)
        case _:
            return change_refused(outcome, sent_id)


def _service(context: Context) -> CertificateService:
    return context.services.certificates


async def on_certificate(
    info: strawberry.Info[Context, None],
    sent_id: strawberry.ID,
    act: Callable[[Context, str], Awaitable[Outcome]],
    to_result: Callable[[Outcome, str], Answer],
) -> Answer | CertificateNotFoundError:
    """Run a use case on the certificate a mutation names and map its outcome; an id this API
    did not hand out (malformed, or of another type) is not found, before anything runs."""
    certificate_id = local_id(sent_id, CERTIFICATE)
    if certificate_id is None:
        return CertificateNotFoundError.for_id(sent_id)
    outcome = await act(info.context, certificate_id)
    return to_result(outcome, sent_id)


@strawberry.type
class Mutation:
    @fields.mutation(description="Order a new certificate; it starts in PENDING_APPLICATION.")
    async def create_certificate(
        self, info: strawberry.Info[Context, None], input: CreateCertificateInput
    ) -> CreateCertificateResult:
        context = info.context
        outcome = await context.services.certificates.create_certificate(
            context.tenant_id,
            name=input.name,
            type=input.type,
            domain_type=input.domain_type,
            brand=input.brand,
            domain_quota=input.domain_quota,
            validity_years=input.validity_years,
        )
        return create_result(outcome)

    @fields.mutation(
        description="Fill in the domains (and organization) and submit the application to the CA."
    )
    async def apply_for_certificate(
        self, info: strawberry.Info[Context, None], input: ApplyForCertificateInput
    ) -> ApplyForCertificateResult:
        organization = input.organization
        application = Application(
            domain=input.domain,
            additional_domains=list(input.additional_domains or ()),
            method=input.validation_method,
            organization_name=organization.name if organization else None,
            organization_country=organization.country if organization else None,
        )
        return await on_certificate(
            info,
            input.certificate_id,
            lambda context, id_: _service(context).apply(context.tenant_id, id_, application),
            apply_result,
        )

    @fields.mutation(
        description="Tell the CA the domain validation records are published; "
        "it checks them asynchronously."
    )
    async def verify_domain(
        self, info: strawberry.Info[Context, None], input: CertificateIdInput
    ) -> CertificateChangeResult:
        return await on_certificate(
            info,
            input.certificate_id,
            lambda context, id_: _service(context).verify_domain(context.tenant_id, id_),
            change_result,
        )

    @fields.mutation(description="Add domains to a MULTIPLE certificate, within its quota.")
    async def add_domains(
        self, info: strawberry.Info[Context, None], input: AddDomainsInput
    ) -> CertificateChangeResult:
        domains = list(input.domains)
        return await on_certificate(
            info,
            input.certificate_id,
            lambda context, id_: _service(context).add_domains(context.tenant_id, id_, domains),
            change_result,
        )

    @fields.mutation(
        description="Ask the CA to stop reviewing the application; it decides asynchronously."
    )
    async def withdraw_application(
        self, info: strawberry.Info[Context, None], input: WithdrawApplicationInput
    ) -> WithdrawApplicationResult:
        key = input.idempotency_key
        return await on_certificate(
            info,
            input.certificate_id,
            lambda context, id_: _service(context).withdraw(context.tenant_id, id_, key),
            withdraw_result,
        )

    @fields.mutation(description="Ask the CA to revoke an issued certificate.")
    async def revoke_certificate(
        self, info: strawberry.Info[Context, None], input: RevokeCertificateInput
    ) -> CertificateChangeResult:
        reason = input.reason
        return await on_certificate(
            info,
            input.certificate_id,
            lambda context, id_: _service(context).revoke(context.tenant_id, id_, reason),
            change_result,
        )

    @fields.mutation(
        description="Delete a certificate: at once when the CA holds nothing, else through the CA."
    )
    async def delete_certificate(
        self, info: strawberry.Info[Context, None], input: CertificateIdInput
    ) -> CertificateChangeResult:
        return await on_certificate(
            info,
            input.certificate_id,
            lambda context, id_: _service(context).delete(context.tenant_id, id_),
            change_result,
        )
