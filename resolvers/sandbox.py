"""Resolver layer: the sandbox mutations that drive the simulated CA (sandbox mode only)."""

from __future__ import annotations

from typing import Annotated, assert_never

import strawberry

from domain import results
from domain.sandbox import NothingToDecide, Sandbox, SandboxDecided, SandboxResult
from resolvers import fields
from resolvers.context import Context
from resolvers.enums import SandboxDecision
from resolvers.errors import CertificateNotFoundError, InvalidCertificateStateError
from resolvers.mutations import on_certificate
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
        case results.InvalidState() | NothingToDecide():
            return InvalidCertificateStateError.from_outcome(outcome)
        case results.NotFound():
            return CertificateNotFoundError.for_id(sent_id)
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
        decision = input.decision
        return await on_certificate(
            info,
            input.certificate_id,
            lambda context, id_: _sandbox(context).decide(context.tenant_id, id_, decision),
            decide_result,
        )

    @fields.mutation(
        description="Sandbox only: make the simulated CA unreachable (or reachable again)."
    )
    async def sandbox_set_ca_reachable(
        self, info: strawberry.Info[Context, None], input: SandboxSetCaReachableInput
    ) -> SandboxSetCaReachableSuccess:
        await _sandbox(info.context).set_reachable(input.reachable)
        return SandboxSetCaReachableSuccess(reachable=input.reachable)
