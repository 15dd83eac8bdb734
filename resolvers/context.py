"""Resolver layer: the typed context every resolver reads, and its per-request DataLoaders."""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from graphql import GraphQLError
from strawberry.dataloader import DataLoader

from domain.model import Certificate, CertificateDocument, CertificateEvent, TenantId, Withdrawal
from domain.ports import ChangePosition, StatusChange
from domain.reading import CertificateReader
from domain.sandbox import Sandbox
from domain.service import CertificateService


@dataclass(frozen=True, slots=True)
class FeedChange:
    """A committed status change and its place in the change feed: feed sequences follow the
    order changes were committed, so everything after a change's sequence is everything
    committed after it (what a subscription cursor holds)."""

    sequence: int
    change: StatusChange


class ChangeFeed(Protocol):
    """Committed status changes, per tenant (the server's broker)."""

    def subscribe(
        self, tenant_id: TenantId, after: int | ChangePosition | None = None
    ) -> AbstractAsyncContextManager[AsyncIterable[FeedChange]]:
        """The tenant's changes as they are committed; with `after` (a feed sequence, or the
        position a cursor named before changes had one), first those committed after it, then
        the live ones, in commit order, with no gap and no repeat.

        Entering raises `UnknownPosition` for a position that names no change of the tenant;
        the iteration raises `SubscriberLagging` when the subscriber falls too far behind."""
        ...


class UnknownPosition(Exception):
    """A subscription asked to resume after a position that names no change of its tenant."""


class SubscriberLagging(Exception):
    """A subscriber fell so far behind that the feed stopped queueing changes for it; it can
    subscribe again from the last position it received and miss nothing."""


@dataclass(frozen=True, slots=True)
class Services:
    """What the API talks to; one per process, shared by every request."""

    certificates: CertificateService
    reader: CertificateReader
    changes: ChangeFeed
    sandbox: Sandbox | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the tenant the bearer token names."""

    tenant_id: TenantId
    tenant_name: str


class Loaders:
    """Batching loaders of one tenant's data.

    Over HTTP they live for one request and cache. A WebSocket context lives as long as the
    connection, so there they only batch (`cache=False`): each load reads fresh data.
    """

    def __init__(self, reader: CertificateReader, tenant_id: TenantId, *, cache: bool) -> None:
        self._reader = reader
        self._tenant_id = tenant_id
        self.certificate = DataLoader[str, Certificate | None](
            load_fn=self._load_certificates, cache=cache
        )
        self.withdrawal = DataLoader[str, Withdrawal | None](
            load_fn=self._load_withdrawals, cache=cache
        )
        self.events = DataLoader[str, Sequence[CertificateEvent]](
            load_fn=self._load_events, cache=cache
        )
        self.document = DataLoader[str, CertificateDocument | None](
            load_fn=self._load_documents, cache=cache
        )

    async def _load_certificates(self, ids: list[str]) -> list[Certificate | None]:
        found = await self._reader.certificates(self._tenant_id, ids)
        return [found.get(i) for i in ids]

    async def _load_withdrawals(self, ids: list[str]) -> list[Withdrawal | None]:
        found = await self._reader.withdrawals(self._tenant_id, ids)
        return [found.get(i) for i in ids]

    async def _load_events(self, ids: list[str]) -> list[Sequence[CertificateEvent]]:
        found = await self._reader.events(self._tenant_id, ids)
        return [found.get(i, ()) for i in ids]

    async def _load_documents(self, ids: list[str]) -> list[CertificateDocument | None]:
        found = await self._reader.documents(self._tenant_id, ids)
        return [found.get(i) for i in ids]

    def prime_certificates(self, certificates: Sequence[Certificate]) -> None:
        """Certificates just read need no second read (`Withdrawal.certificate`)."""
        self.certificate.prime_many({c.id: c for c in certificates})

    def prime_events(self, histories: Mapping[str, Sequence[CertificateEvent]]) -> None:
        self.events.prime_many(histories)

    def clear(self) -> None:
        """Let go of the loaders and all they hold (see `Context.release`). Each loader refers
        back to this object through its load function, a cycle that would otherwise keep its
        batches alive until the cycle collector runs."""
        for name, loader in list(vars(self).items()):
            if isinstance(loader, DataLoader):
                delattr(self, name)


@dataclass(slots=True)
class Context:
    """Per HTTP request, or per WebSocket connection (the caller is then set on connect)."""

    services: Services
    caller: Caller | None = None
    cache_loads: bool = True
    # Set by Strawberry from a WebSocket `connection_init` payload.
    connection_params: dict[str, object] | None = None
    _loaders: Loaders | None = field(default=None, repr=False)

    def require_caller(self) -> Caller:
        if self.caller is None:
            # The transports authenticate before any operation runs; this is a bug guard.
            raise GraphQLError("Not authenticated.", extensions={"code": "UNAUTHENTICATED"})
        return self.caller

    @property
    def event_sharing_key(self) -> object | None:
        """Who may share a subscription event's execution (`graphql_engine.shared_execution`):
        the same services and the same caller; nobody before the caller is known."""
        return None if self.caller is None else (id(self.services), self.caller)

    @property
    def tenant_id(self) -> TenantId:
        return self.require_caller().tenant_id

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self.services.reader, self.tenant_id, cache=self.cache_loads)
        return self._loaders

    def release(self) -> None:
        """Drop what this request loaded once it is answered. graphql-core's executor, which
        holds this context, sits in reference cycles and waits for the cycle collector; what
        the loaders hold (a page's certificates and events) need not wait with it."""
        if self._loaders is not None:
            self._loaders.clear()
            self._loaders = None
