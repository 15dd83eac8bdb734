"""Resolver layer: the Query root (node, certificate, certificates, viewer)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import strawberry
from strawberry.types.nodes import SelectedField, Selection

from domain.reading import CertificateFilter, Ordering
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
from resolvers.types import Certificate, Node, Viewer, Withdrawal


async def load_certificate(context: Context, global_id: str) -> Certificate | None:
    certificate_id = local_id(global_id, CERTIFICATE)
    if certificate_id is None:
        return None
    found = await context.loaders.certificate.load(certificate_id)
    return Certificate.from_model(found) if found else None


def _selects(selections: Sequence[Selection], path: tuple[str, ...]) -> bool:
    """Whether the selection has the field at `path` below the current field (through
    fragments too, whatever their directives: at worst something is read for nothing)."""
    if not path:
        return True
    return any(_selects(child.selections, path[1:]) for child in _fields(selections, path[0]))


def _fields(selections: Sequence[Selection], name: str) -> Iterator[SelectedField]:
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name == name:
                yield selection
        else:
            yield from _fields(selection.selections, name)


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
        # A console lists certificates with their history: read it with the page, in one query.
        histories = None
        if _selects(info.selected_fields, ("certificates", "nodes", "events")) or _selects(
            info.selected_fields, ("certificates", "edges", "node", "events")
        ):
            ids = [c.id for c in page.certificates]
            histories = await context.services.reader.events(context.tenant_id, ids)
            context.loaders.prime_events({i: histories.get(i, ()) for i in ids})
        return to_connection(page, request, ordering.field, context.tenant_id, where, histories)

    @fields.field(description="Who is asking.")
    def viewer(self, info: strawberry.Info[Context, None]) -> Viewer:
        return Viewer.of(info.context)
