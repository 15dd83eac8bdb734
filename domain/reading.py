"""Domain layer: the read side the API needs (lists, pages, batch loads), as a port.

`server.persistence.queries` implements `CertificateReader` over SQL; the resolvers only
describe what to read. Every method reads in one short transaction of its own, so concurrent
resolvers never share a session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from domain.model import Certificate, CertificateDocument, CertificateEvent, TenantId, Withdrawal
from domain.statuses import CertificateStatus, CertificateType


class SortField(StrEnum):
    CREATED_AT = "CREATED_AT"
    UPDATED_AT = "UPDATED_AT"
    EXPIRES_AT = "EXPIRES_AT"
    DOMAIN = "DOMAIN"
    NAME = "NAME"


SortKey = datetime | str | None

# Sort fields whose key may be null (such certificates sort last in both directions).
NULLABLE_FIELDS = frozenset({SortField.EXPIRES_AT, SortField.DOMAIN})
DATETIME_FIELDS = frozenset({SortField.CREATED_AT, SortField.UPDATED_AT, SortField.EXPIRES_AT})


def sort_key(certificate: Certificate, field: SortField) -> SortKey:
    match field:
        case SortField.CREATED_AT:
            return certificate.created_at
        case SortField.UPDATED_AT:
            return certificate.updated_at
        case SortField.EXPIRES_AT:
            return certificate.expires_at
        case SortField.DOMAIN:
            return certificate.domain
        case SortField.NAME:
            return certificate.name


@dataclass(frozen=True, slots=True)
class CertificateFilter:
    """None means "no condition". DELETED is left out unless `statuses` names it."""

    statuses: frozenset[CertificateStatus] | None = None
    search: str | None = None
    withdrawable: bool | None = None
    types: frozenset[CertificateType] | None = None


@dataclass(frozen=True, slots=True)
class Ordering:
    field: SortField = SortField.CREATED_AT
    descending: bool = True


@dataclass(frozen=True, slots=True)
class Position:
    """A place in an ordering: the sort key and id of one certificate (what a cursor holds)."""

    key: SortKey
    id: str


@dataclass(frozen=True, slots=True)
class PageRequest:
    """`limit` certificates strictly between `after` and `before`, from the start or the end."""

    limit: int
    from_end: bool = False
    after: Position | None = None
    before: Position | None = None


@dataclass(frozen=True, slots=True)
class Page:
    certificates: Sequence[Certificate]
    # Whether more certificates lie beyond the page in the reading direction.
    has_more: bool


class CertificateReader(Protocol):
    async def page(
        self,
        tenant_id: TenantId,
        where: CertificateFilter,
        ordering: Ordering,
        request: PageRequest,
    ) -> Page:
        """One page, in the ordering's order (also when read from the end)."""
        ...

    async def count(self, tenant_id: TenantId, where: CertificateFilter) -> int: ...

    async def certificates(
        self, tenant_id: TenantId, ids: Sequence[str]
    ) -> Mapping[str, Certificate]: ...

    async def withdrawals(
        self, tenant_id: TenantId, ids: Sequence[str]
    ) -> Mapping[str, Withdrawal]: ...

    async def events(
        self, tenant_id: TenantId, certificate_ids: Sequence[str]
    ) -> Mapping[str, Sequence[CertificateEvent]]:
        """Each certificate's events, oldest first."""
        ...

    async def documents(
        self, tenant_id: TenantId, certificate_ids: Sequence[str]
    ) -> Mapping[str, CertificateDocument]:
        """The issued certificate of each certificate that has one."""
        ...
