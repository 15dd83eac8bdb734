"""Resolver layer: the sandbox mutations that drive the simulated CA (sandbox mode only)."""

from __future__ import annotations

from typing import Annotated, assert_never

import strawberry

from domain import results
from domain.sandbox import NothingToDecide, Sandbox, SandboxDecided, SandboxResult
from resolvers import fields
from resolvers.context import Context
from resolvers.enums import CertificateStatus, SandboxDecision
from resolvers.errors import CertificateNotFoundError, InvalidCertificateStateError
from resolvers.ids import CERTIFICATE, local_id
from resolvers.types import Certificate


@strawberry.input
class SandboxCaDecideInput:
    certificate_id: strawberry.ID
    decision: SandboxDecision


@strawberry.type
class SandboxCaDecideSuccess:
    certificate: Certificate = strawberry.field(
        description="The certificate as this service knows it; it catches up with the CA's "
        "decision asynchronously, as with a real CA."
    )


SandboxCaDecideResult = Annotated[
    SandboxCaDecideSuccess | CertificateNotFoundError | InvalidCertificateStateError,
    strawberry.union("SandboxCaDecideResult"),
]


@strawberry.input
class SandboxSetCaReachableInput:
    reachable: bool


@strawberry.type
class SandboxSetCaReachableSuccess:
    reachable: bool = strawberry.field(
        description="Whether the simulated CA now answers; while false every call to it fails "
        "as if the network were down."
    )


def _sandbox(context: Context) -> Sandbox:
    # The schema has these mutations only when the server runs the simulated CA.
    sandbox = context.services.sandbox
    if sandbox is None:
        raise RuntimeError("the sandbox mutations need the simulated CA")
    return sandbox


def decide_result(outcome: SandboxResult, sent_id: str) -> SandboxCaDecideResult:
    match outcome:
        case SandboxDecided(certificate=certificate):
            return SandboxCaDecideSuccess(certificate=Certificate.from_model(certificate))
        case NothingToDecide(certificate=certificate):
            return InvalidCertificateStateError(
                message=outcome.message,
                certificate=Certificate.from_model(certificate),
                current_status=certificate.status,
                allowed_statuses=[s for s in CertificateStatus if s in outcome.allowed],
            )
        case results.NotFound():
            return CertificateNotFoundError.for_id(sent_id)
        case results.InvalidState():
            return InvalidCertificateStateError.from_outcome(outcome)
        case _:
            assert_never(outcome)


@strawberry.type
class SandboxMutation:
    @fields.mutation(
        description="Sandbox only: the simulated CA decides now on what it is reviewing."
    )
    async def sandbox_ca_decide(
        self, info: strawberry.Info[Context, None], input: SandboxCaDecideInput
    ) -> SandboxCaDecideResult:
        context = info.context
        certificate_id = local_id(input.certificate_id, CERTIFICATE)
        if certificate_id is None:
            return CertificateNotFoundError.for_id(input.certificate_id)
        outcome = await _sandbox(context).decide(context.tenant_id, certificate_id, input.decision)
        return decide_result(outcome, input.certificate_id)

    @fields.mutation(
        description="Sandbox only: make the simulated CA unreachable (or reachable again)."
    )
    async def sandbox_set_ca_reachable(
        self, info: strawberry.Info[Context, None], input: SandboxSetCaReachableInput
    ) -> SandboxSetCaReachableSuccess:
        await _sandbox(info.context).set_reachable(input.reachable)
        return SandboxSetCaReachableSuccess(reachable=input.reachable)
