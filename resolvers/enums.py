"""Resolver layer: the GraphQL enums, most of them the domain's own vocabularies.

The domain's enums are registered with Strawberry as they are (so the API and the domain
cannot drift apart); import them from here, which guarantees the registration ran.
"""

from __future__ import annotations

from enum import StrEnum

import strawberry

from domain.reading import SortField
from domain.sandbox import SandboxDecision
from domain.statuses import (
    CertificateAction,
    CertificateStatus,
    CertificateType,
    DomainType,
    ValidationMethod,
    WithdrawalBlockReason,
    WithdrawalFailureReason,
    WithdrawalStatus,
)

__all__ = [
    "CertificateAction",
    "CertificateStatus",
    "CertificateType",
    "DomainType",
    "OrderDirection",
    "SandboxDecision",
    "SortField",
    "ValidationMethod",
    "WithdrawalBlockReason",
    "WithdrawalFailureReason",
    "WithdrawalStatus",
]

strawberry.enum(
    CertificateStatus,
    description="Where a certificate is in its lifecycle; `statusLabel` gives the wording.",
)
strawberry.enum(
    CertificateType,
    description="Validation level: domain (DV), organization (OV) or extended validation (EV).",
)
strawberry.enum(
    DomainType, description="One domain, one wildcard domain, or several domains up to a quota."
)
strawberry.enum(ValidationMethod, description="How the applicant proves control of the domains.")
strawberry.enum(
    CertificateAction,
    description="A mutation the caller may perform on a certificate in its current state.",
)
strawberry.enum(WithdrawalStatus, description="Whether the CA has decided on a withdrawal yet.")
strawberry.enum(WithdrawalFailureReason, description="Why a withdrawal failed.")
strawberry.enum(
    WithdrawalBlockReason, description="What was submitted that rules a withdrawal out."
)
strawberry.enum(
    SortField,
    name="CertificateOrderField",
    description="What to sort certificates by; ties are broken by id, nulls come last.",
)
strawberry.enum(
    SandboxDecision,
    name="SandboxCaDecision",
    description="What the simulated CA decides about the review it holds.",
)


@strawberry.enum(description="Sort direction.")
class OrderDirection(StrEnum):
    ASC = "ASC"
    DESC = "DESC"
