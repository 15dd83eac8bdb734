"""Resolver layer: the Query root (node, certificate, certificates, viewer)."""

from __future__ import annotations

import strawberry

from resolvers import fields
from resolvers.connection import (
    DEFAULT_PAGE,
    MAX_PAGE,
    CertificateConnection,
    CertificateFilterInput,
    CertificateOrder,
    PagingArguments,
    to_connection,
)
from resolvers.context import Context
from resolvers.ids import CERTIFICATE, WITHDRAWAL, from_global_id, local_id
from resolvers.reading import CertificateFilter, Ordering
from resolvers.types import Certificate, Node, Viewer, Withdrawal


async def load_certificate(context: Context, global_id: str) -> Certificate | None:
    certificate_id = local_id(global_id, CERTIFICATE)
    if certificate_id is None:
        return None
    found = await context.loaders.certificate.load(certificate_id)
    return Certificate.from_model(found) if found else None


@strawberry.type
class Query:
    @fields.field(description="Any object by its global id; null if it is not yours.")
    async def node(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Node | None:
        match from_global_id(id):
            case (type_name, _) if type_name == CERTIFICATE:
                return await load_certificate(info.context, id)
            case (type_name, withdrawal_id) if type_name == WITHDRAWAL:
                found = await info.context.loaders.withdrawal.load(withdrawal_id)
                return Withdrawal.from_model(found) if found else None
            case _:
                return None

    @fields.field(
        description="One certificate; null, without errors, if the id is unknown, "
        "malformed or another tenant's. DELETED certificates resolve too."
    )
    async def certificate(
        self, info: strawberry.Info[Context, None], id: strawberry.ID
    ) -> Certificate | None:
        return await load_certificate(info.context, id)

    @fields.field(
        description="Your certificates as a Relay cursor connection. Default order: CREATED_AT "
        f"DESC; without `first` or `last`, the first {DEFAULT_PAGE}. `first`/`last` at most "
        f"{MAX_PAGE}. DELETED certificates are left out unless the status filter names DELETED."
    )
    async def certificates(
        self,
        info: strawberry.Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: CertificateFilterInput | None = None,
        order_by: CertificateOrder | None = None,
    ) -> CertificateConnection:
        ordering = order_by.to_ordering() if order_by else Ordering()
        request = PagingArguments(first, after, last, before).to_request(ordering.field)
        where = filter.to_filter() if filter else CertificateFilter()
        context = info.context
        page = await context.services.reader.page(context.tenant_id, where, ordering, request)
        context.loaders.prime_certificates(page.certificates)
        return to_connection(page, request, ordering.field, context.tenant_id, where)

    @fields.field(description="Who is asking.")
    def viewer(self, info: strawberry.Info[Context, None]) -> Viewer:
        return Viewer.of(info.context)
