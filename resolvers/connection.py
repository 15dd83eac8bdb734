"""Resolver layer: the Relay cursor connection of certificates (keyset paging, opaque cursors)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import strawberry
from graphql import GraphQLError

from domain import model as dm
from domain import reading
from domain.model import TenantId
from domain.reading import DATETIME_FIELDS, Ordering, Page, PageRequest, Position, sort_key
from resolvers import fields
from resolvers.context import Context
from resolvers.cursors import decode_json_cursor, encode_json_cursor
from resolvers.enums import CertificateStatus, CertificateType, OrderDirection, SortField
from resolvers.types import Certificate

MAX_PAGE = 100
DEFAULT_PAGE = 20
# Bounds the search pattern (and so its LIKE, far below SQLite's 50,000-byte pattern limit)
# before any query runs; a name is at most 200 characters too.
MAX_SEARCH_LENGTH = 200
BAD_USER_INPUT = "BAD_USER_INPUT"


class BadUserInput(GraphQLError):
    """Arguments the schema accepts but the API refuses; reported with no data."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": BAD_USER_INPUT})


@strawberry.input(
    name="CertificateFilter", description="Conditions every listed certificate meets."
)
class CertificateFilterInput:
    status: list[CertificateStatus] | None = strawberry.field(
        default=None, description="Any of these statuses. DELETED is left out unless named here."
    )
    search: str | None = strawberry.field(
        default=None,
        description="Case-insensitive substring of the name or of any domain, taken literally;"
        f" at most {MAX_SEARCH_LENGTH} characters.",
    )
    withdrawable: bool | None = strawberry.field(
        default=None,
        description="Only certificates whose application can be withdrawn now (true) or not.",
    )
    type: list[CertificateType] | None = strawberry.field(default=None)

    def to_filter(self) -> reading.CertificateFilter:
        return reading.CertificateFilter(
            statuses=frozenset(self.status) if self.status is not None else None,
            search=checked_search(self.search),
            withdrawable=self.withdrawable,
            types=frozenset(self.type) if self.type is not None else None,
        )


def checked_search(search: str | None) -> str | None:
    if search is None:
        return None
    if len(search) > MAX_SEARCH_LENGTH:
        raise BadUserInput(
            f"`filter.search` has at most {MAX_SEARCH_LENGTH} characters; got {len(search)}."
        )
    # PostgreSQL refuses NUL in text outright and SQLite's LIKE stops reading at one: no
    # answer both would agree on.
    if "\x00" in search:
        raise BadUserInput("`filter.search` cannot contain the NUL character.")
    return search


@strawberry.input(description="Sort order of a certificate list.")
class CertificateOrder:
    field: SortField
    direction: OrderDirection

    def to_ordering(self) -> Ordering:
        return Ordering(field=self.field, descending=self.direction is OrderDirection.DESC)


@strawberry.type(description="Where a page lies in the whole list.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class CertificateEdge:
    cursor: str
    node: Certificate


@strawberry.type(description="One page of certificates.")
class CertificateConnection:
    edges: list[CertificateEdge]
    nodes: list[Certificate]
    page_info: PageInfo
    tenant_id: strawberry.Private[TenantId]
    where: strawberry.Private[reading.CertificateFilter]

    @fields.field(description="How many certificates match the filter, on every page.")
    async def total_count(self, info: strawberry.Info[Context, None]) -> int:
        # A separate query, run only when a client selects this field.
        return await info.context.services.reader.count(self.tenant_id, self.where)


# ---- cursors: base64 of JSON [sort field, sort key, id]


def encode_cursor(field: SortField, position: Position) -> str:
    key = position.key.isoformat() if isinstance(position.key, datetime) else position.key
    return encode_json_cursor([field.value, key, position.id])


def decode_cursor(cursor: str, field: SortField) -> Position:
    try:
        data = decode_json_cursor(cursor)
    except ValueError:
        raise BadUserInput(f"{cursor!r} is not a cursor of this list.") from None
    match data:
        case [str(name), str() | None as key, str(certificate_id)] if name == field.value:
            pass
        case _:
            raise BadUserInput(f"{cursor!r} is not a cursor of this list in this order.")
    if key is not None and field in DATETIME_FIELDS:
        try:
            return Position(datetime.fromisoformat(key), certificate_id)
        except ValueError:
            raise BadUserInput(f"{cursor!r} is not a cursor of this list.") from None
    return Position(key, certificate_id)


# ---- arguments to a page request, and a page to a connection


@dataclass(frozen=True, slots=True)
class PagingArguments:
    first: int | None
    after: str | None
    last: int | None
    before: str | None

    def to_request(self, field: SortField) -> PageRequest:
        if self.first is not None and self.last is not None:
            raise BadUserInput("Pass `first` or `last`, not both.")
        for name, value in (("first", self.first), ("last", self.last)):
            if value is not None and not 0 <= value <= MAX_PAGE:
                raise BadUserInput(f"`{name}` must be between 0 and {MAX_PAGE}; got {value}.")
        from_end = self.last is not None
        limit = self.last if self.last is not None else self.first
        return PageRequest(
            limit=DEFAULT_PAGE if limit is None else limit,
            from_end=from_end,
            after=decode_cursor(self.after, field) if self.after is not None else None,
            before=decode_cursor(self.before, field) if self.before is not None else None,
        )


def to_connection(
    page: Page,
    request: PageRequest,
    field: SortField,
    tenant_id: TenantId,
    where: reading.CertificateFilter,
    histories: Mapping[str, Sequence[dm.CertificateEvent]] | None = None,
) -> CertificateConnection:
    """The page as a connection; with `histories` (events by certificate id, read with the
    page), each node's events are there already."""
    certificates: Sequence[dm.Certificate] = page.certificates
    edges = [
        CertificateEdge(
            cursor=encode_cursor(field, Position(sort_key(c, field), c.id)),
            node=Certificate.from_model(c, None if histories is None else histories.get(c.id, ())),
        )
        for c in certificates
    ]
    # Beyond the page in the reading direction: known from the page query (one row extra).
    # A cursor bounding the page means the certificate it came from lies on that side.
    after, before = request.after is not None, request.before is not None
    if request.from_end:
        has_previous, has_next = page.has_more or after, before
    else:
        has_next, has_previous = page.has_more or before, after
    return CertificateConnection(
        edges=edges,
        nodes=[edge.node for edge in edges],
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        tenant_id=tenant_id,
        where=where,
    )
