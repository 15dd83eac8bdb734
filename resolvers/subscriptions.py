"""Resolver layer: the Subscription root (status changes of the caller's certificates)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry

from resolvers import fields
from resolvers.context import Context
from resolvers.enums import CertificateStatus
from resolvers.ids import CERTIFICATE, local_id
from resolvers.types import Certificate


@strawberry.type(description="A certificate changed status.")
class CertificateStatusChange:
    certificate: Certificate = strawberry.field(description="The certificate as it is now.")
    previous_status: CertificateStatus | None
    status: CertificateStatus
    changed_at: datetime


@strawberry.type
class Subscription:
    @fields.subscription(
        description="Status changes of your certificates: those listed (ids that are not yours "
        "are ignored), or all of them when certificateIds is null."
    )
    async def certificate_status_changed(
        self,
        info: strawberry.Info[Context, None],
        certificate_ids: list[strawberry.ID] | None = None,
    ) -> AsyncGenerator[CertificateStatusChange, None]:
        context = info.context
        tenant_id = context.tenant_id
        wanted = (
            None
            if certificate_ids is None
            else {local_id(global_id, CERTIFICATE) for global_id in certificate_ids} - {None}
        )
        reader = context.services.reader
        # The feed carries only this tenant's changes: another tenant's ids never match.
        async with context.services.changes.subscribe(tenant_id) as changes:
            async for change in changes:
                if wanted is not None and change.certificate_id not in wanted:
                    continue
                # Read afresh for every change: this context lives as long as the connection.
                found = await reader.certificates(tenant_id, [change.certificate_id])
                certificate = found.get(change.certificate_id)
                if certificate is None:
                    continue
                yield CertificateStatusChange(
                    certificate=Certificate.from_model(certificate),
                    previous_status=change.previous_status,
                    status=change.status,
                    changed_at=change.changed_at,
                )
