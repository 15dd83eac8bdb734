"""Resolver layer: the typed errors of the result unions, built from domain outcomes.

Every error type implements `Error { message code }`; `code` is the type's name in
UPPER_SNAKE_CASE without the `_ERROR` suffix (INVALID_CERTIFICATE_STATE, CA_ALREADY_APPROVED).
"""

from __future__ import annotations

import re

import strawberry

from domain import results
from domain.sandbox import NothingToDecide
from resolvers import fields
from resolvers.enums import CertificateStatus, WithdrawalBlockReason
from resolvers.types import Certificate, Withdrawal

_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SNAKE_JOINT = re.compile(r"_([a-z0-9])")


def error_code(type_name: str) -> str:
    """`CaAlreadyApprovedError` -> `CA_ALREADY_APPROVED`."""
    return _WORD_START.sub("_", type_name.removesuffix("Error")).upper()


def input_path(field: str) -> str:
    """Where a domain input field sits in a mutation's arguments:
    `additional_domains[1]` -> `input.additionalDomains[1]`. A path given already as the API
    spells it (`input.domain`) is kept."""
    if field.startswith("input."):
        return field
    return "input." + _SNAKE_JOINT.sub(lambda joint: joint.group(1).upper(), field)


@strawberry.interface(
    description="Implemented by every typed error in a result union: "
    "a client can always ask `... on Error { message code }`."
)
class Error:
    message: str

    @fields.field(description="Stable machine-readable code, e.g. INVALID_CERTIFICATE_STATE.")
    def code(self) -> str:
        return error_code(type(self).__name__)


@strawberry.type(description="No certificate of yours has this id.")
class CertificateNotFoundError(Error):
    certificate_id: strawberry.ID = strawberry.field(
        description="The id as sent; also for another tenant's certificate and malformed ids."
    )

    @classmethod
    def for_id(cls, certificate_id: str) -> CertificateNotFoundError:
        return cls(
            message=results.NotFound(certificate_id).message,
            certificate_id=strawberry.ID(certificate_id),
        )


@strawberry.type(description="The certificate's status does not allow this operation.")
class InvalidCertificateStateError(Error):
    certificate: Certificate
    current_status: CertificateStatus
    allowed_statuses: list[CertificateStatus] = strawberry.field(
        description="The statuses in which this operation is allowed."
    )

    @classmethod
    def from_outcome(
        cls, outcome: results.InvalidState | NothingToDecide
    ) -> InvalidCertificateStateError:
        return cls(
            message=outcome.message,
            certificate=Certificate.from_model(outcome.certificate),
            current_status=outcome.certificate.status,
            # In lifecycle order, as the enum lists them.
            allowed_statuses=[s for s in CertificateStatus if s in outcome.allowed],
        )


@strawberry.type(description="A deletion or revocation was submitted: no withdrawal any more.")
class WithdrawalNotAllowedError(Error):
    certificate: Certificate
    reason: WithdrawalBlockReason

    @classmethod
    def from_outcome(cls, outcome: results.WithdrawalNotAllowed) -> WithdrawalNotAllowedError:
        return cls(
            message=outcome.message,
            certificate=Certificate.from_model(outcome.certificate),
            reason=outcome.reason,
        )


@strawberry.type(description="The CA had already approved the certificate; the withdrawal failed.")
class CaAlreadyApprovedError(Error):
    certificate: Certificate = strawberry.field(
        description="The certificate as the CA left it (normally ISSUED)."
    )
    withdrawal: Withdrawal = strawberry.field(
        description="The failed withdrawal, as it now shows in the certificate list."
    )

    @classmethod
    def from_outcome(cls, outcome: results.CaAlreadyApproved) -> CaAlreadyApprovedError:
        return cls(
            message=outcome.message,
            certificate=Certificate.from_model(outcome.certificate),
            withdrawal=Withdrawal.from_model(outcome.withdrawal),
        )


@strawberry.type(description="The certificate authority cannot be reached; nothing was changed.")
class CaUnavailableError(Error):
    retry_after_seconds: int

    @classmethod
    def from_outcome(cls, outcome: results.CaUnreachable) -> CaUnavailableError:
        return cls(message=outcome.message, retry_after_seconds=outcome.retry_after_seconds)


@strawberry.type(description="An input value was refused.")
class ValidationError(Error):
    field: str = strawberry.field(
        description="The input field at fault, as a dotted path, e.g. input.domain."
    )

    @classmethod
    def from_outcome(cls, outcome: results.InvalidInput) -> ValidationError:
        return cls(message=outcome.message, field=input_path(outcome.field))
