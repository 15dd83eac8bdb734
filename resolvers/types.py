"""Resolver layer: the GraphQL object types (certificates, withdrawals, events, the viewer)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import strawberry

from domain import model as dm
from resolvers import fields
from resolvers.context import Context
from resolvers.enums import (
    CertificateAction,
    CertificateStatus,
    CertificateType,
    DomainType,
    ValidationMethod,
    WithdrawalFailureReason,
    WithdrawalStatus,
)
from resolvers.ids import CERTIFICATE, EVENT, TENANT, WITHDRAWAL, to_global_id


@strawberry.interface(description="An object with a global id; fetch any of them with `node(id:)`.")
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque global id; do not parse it.")


@strawberry.type(description="A DNS record the applicant publishes to prove domain control.")
class DnsRecord:
    name: str
    type: str
    value: str


@strawberry.type(description="How the applicant proves control of the certificate's domains.")
class DomainValidation:
    method: ValidationMethod
    records: list[DnsRecord] = strawberry.field(
        description="What to publish: for DNS, one TXT record per domain."
    )
    verified_at: datetime | None = strawberry.field(
        description="When the CA accepted the proof; null until then."
    )

    @classmethod
    def from_model(cls, validation: dm.DomainValidation) -> DomainValidation:
        return cls(
            method=validation.method,
            records=[
                DnsRecord(name=r.name, type=r.type, value=r.value) for r in validation.records
            ],
            verified_at=validation.verified_at,
        )


@strawberry.type(description="The organization an OV or EV certificate vouches for.")
class Organization:
    name: str
    country: str = strawberry.field(description="ISO 3166-1 alpha-2 country code.")
    verified_at: datetime | None = strawberry.field(
        description="When the CA verified the organization; null until then."
    )

    @classmethod
    def from_model(cls, organization: dm.Organization) -> Organization:
        return cls(
            name=organization.name,
            country=organization.country,
            verified_at=organization.verified_at,
        )


@strawberry.type(description="One step of a certificate's history.")
class CertificateEvent:
    id: strawberry.ID
    kind: str = strawberry.field(
        description="What happened, e.g. APPLIED, WITHDRAWAL_REQUESTED, WITHDRAWAL_FAILED, ISSUED."
    )
    from_status: CertificateStatus | None = strawberry.field(
        description="The status before; null for CREATED."
    )
    to_status: CertificateStatus
    at: datetime
    message: str | None

    @classmethod
    def from_models(cls, events: Sequence[dm.CertificateEvent]) -> list[CertificateEvent]:
        return [cls.from_model(event) for event in events]

    @classmethod
    def from_model(cls, event: dm.CertificateEvent) -> CertificateEvent:
        return cls(
            id=strawberry.ID(to_global_id(EVENT, event.id)),
            kind=event.kind.value,
            from_status=event.from_status,
            to_status=event.to_status,
            at=event.at,
            message=event.message,
        )


@strawberry.type(description="A request to withdraw a certificate application, and its result.")
class Withdrawal(Node):
    certificate_id: strawberry.Private[str]
    status: WithdrawalStatus
    failure_reason: WithdrawalFailureReason | None = strawberry.field(
        description="Set when the withdrawal FAILED."
    )
    previous_status: CertificateStatus = strawberry.field(
        description="The status the certificate was in when the withdrawal was submitted."
    )
    requested_at: datetime
    resolved_at: datetime | None = strawberry.field(
        description="When the CA decided; null while PENDING."
    )

    @fields.field(description="The certificate whose application was withdrawn.")
    async def certificate(self, info: strawberry.Info[Context, None]) -> Certificate:
        found = await info.context.loaders.certificate.load(self.certificate_id)
        if found is None:
            # Withdrawals are only reachable through their tenant's certificates.
            raise LookupError(f"withdrawal {self.id} lost its certificate")
        return Certificate.from_model(found)

    @classmethod
    def from_model(cls, withdrawal: dm.Withdrawal) -> Withdrawal:
        return cls(
            id=strawberry.ID(to_global_id(WITHDRAWAL, withdrawal.id)),
            certificate_id=withdrawal.certificate_id,
            status=withdrawal.status,
            failure_reason=withdrawal.failure_reason,
            previous_status=withdrawal.previous_status,
            requested_at=withdrawal.requested_at,
            resolved_at=withdrawal.resolved_at,
        )


@strawberry.type(description="What the issued X.509 certificate (the leaf of `pem`) says.")
class X509Certificate:
    serial_number: str = strawberry.field(description="Lower-case hexadecimal.")
    issuer: str = strawberry.field(description="The issuer's distinguished name (RFC 4514).")
    subject: str = strawberry.field(description="The subject's distinguished name (RFC 4514).")
    not_before: datetime
    not_after: datetime
    dns_names: list[str] = strawberry.field(description="The subjectAltName DNS names.")
    sha256_fingerprint: str = strawberry.field(
        description="SHA-256 of the DER certificate, lower-case hexadecimal."
    )

    @classmethod
    def from_model(cls, document: dm.CertificateDocument) -> X509Certificate:
        return cls(
            serial_number=document.serial_number,
            issuer=document.issuer,
            subject=document.subject,
            not_before=document.not_before,
            not_after=document.not_after,
            dns_names=list(document.dns_names),
            sha256_fingerprint=document.sha256_fingerprint,
        )


@strawberry.type(description="An SSL/TLS certificate and its application, through its lifecycle.")
class Certificate(Node):
    model: strawberry.Private[dm.Certificate]
    name: str
    type: CertificateType
    domain_type: DomainType
    brand: str = strawberry.field(
        description="The CA brand that issues it, e.g. DigiCert, GeoTrust, Let's Encrypt."
    )
    domain: str | None = strawberry.field(
        description="Primary domain; null until the application is filled in."
    )
    additional_domains: list[str]
    status: CertificateStatus
    status_label: str = strawberry.field(
        description="The console wording of the status, "
        "e.g. 'CA verifying (application withdrawal)'."
    )
    available_actions: list[CertificateAction] = strawberry.field(
        description="What the caller may do now; exactly what the mutations accept."
    )
    domain_validation: DomainValidation | None = strawberry.field(
        description="The records to publish; null before applying and after a withdrawal."
    )
    organization: Organization | None = strawberry.field(
        description="For OV and EV; null before applying and after a withdrawal."
    )
    last_withdrawal: Withdrawal | None = strawberry.field(
        description="The most recent withdrawal, with its result; null if never withdrawn."
    )
    version: int = strawberry.field(
        description="Increments on every change; lets a polling client skip unchanged ones."
    )
    created_at: datetime
    updated_at: datetime
    issued_at: datetime | None
    expires_at: datetime | None
    # The events, when whoever read the certificate read them too (a page of them).
    history: strawberry.Private[list[CertificateEvent] | None] = None

    @fields.field(description="Status history, oldest first.", prefetched_in="history")
    async def events(self, info: strawberry.Info[Context, None]) -> list[CertificateEvent]:
        if self.history is not None:
            return self.history
        events: Sequence[dm.CertificateEvent] = await info.context.loaders.events.load(
            self.model.id
        )
        return CertificateEvent.from_models(events)

    @fields.field(
        description="The issued certificate chain in PEM, leaf first, as the CA delivered it; "
        "null until issued. The private key is kept on the server and never exposed."
    )
    async def pem(self, info: strawberry.Info[Context, None]) -> str | None:
        document = await info.context.loaders.document.load(self.model.id)
        return document.pem if document else None

    @fields.field(description="The issued certificate's details; null until issued.")
    async def x509(self, info: strawberry.Info[Context, None]) -> X509Certificate | None:
        document = await info.context.loaders.document.load(self.model.id)
        return X509Certificate.from_model(document) if document else None

    @classmethod
    def from_model(
        cls,
        certificate: dm.Certificate,
        history: Sequence[dm.CertificateEvent] | None = None,
    ) -> Certificate:
        return cls(
            id=strawberry.ID(to_global_id(CERTIFICATE, certificate.id)),
            model=certificate,
            name=certificate.name,
            type=certificate.type,
            domain_type=certificate.domain_type,
            brand=certificate.brand,
            domain=certificate.domain,
            additional_domains=list(certificate.additional_domains),
            status=certificate.status,
            status_label=certificate.status.label,
            available_actions=certificate.available_actions,
            domain_validation=DomainValidation.from_model(certificate.domain_validation)
            if certificate.domain_validation
            else None,
            organization=Organization.from_model(certificate.organization)
            if certificate.organization
            else None,
            last_withdrawal=Withdrawal.from_model(certificate.last_withdrawal)
            if certificate.last_withdrawal
            else None,
            version=certificate.version,
            created_at=certificate.created_at,
            updated_at=certificate.updated_at,
            issued_at=certificate.issued_at,
            expires_at=certificate.expires_at,
            history=None if history is None else CertificateEvent.from_models(history),
        )


@strawberry.type(description="A customer account; every certificate belongs to one.")
class Tenant:
    id: strawberry.ID
    name: str = strawberry.field(description="The name given to `certgraph token create --tenant`.")


@strawberry.type(description="Who is asking.")
class Viewer:
    tenant: Tenant

    @classmethod
    def of(cls, context: Context) -> Viewer:
        caller = context.require_caller()
        return cls(
            tenant=Tenant(
                id=strawberry.ID(to_global_id(TENANT, caller.tenant_id)), name=caller.tenant_name
            )
        )
