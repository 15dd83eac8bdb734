"""Server layer: the in-process broker that fans status changes out to subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from domain.model import TenantId
from domain.ports import StatusChange

# A subscriber that falls this far behind loses its oldest notifications rather than
# growing without bound; subscribers re-read the certificate, so the newest one matters.
QUEUE_LIMIT = 1000


class Subscription:
    def __init__(self, tenant_id: TenantId) -> None:
        self.tenant_id = tenant_id
        self._queue: asyncio.Queue[StatusChange] = asyncio.Queue(QUEUE_LIMIT)

    def offer(self, change: StatusChange) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(change)

    def __aiter__(self) -> AsyncIterator[StatusChange]:
        return self

    async def __anext__(self) -> StatusChange:
        return await self._queue.get()


class Broker:
    """Implements the domain's `ChangePublisher`; each tenant hears only its own changes."""

    def __init__(self) -> None:
        self._subscriptions: dict[TenantId, set[Subscription]] = {}

    async def publish(self, changes: Sequence[StatusChange]) -> None:
        self.deliver(changes)

    def deliver(self, changes: Sequence[StatusChange]) -> None:
        for change in changes:
            for subscription in self._subscriptions.get(change.tenant_id, ()):
                subscription.offer(change)

    @asynccontextmanager
    async def subscribe(self, tenant_id: TenantId) -> AsyncIterator[Subscription]:
        subscription = Subscription(tenant_id)
        self._subscriptions.setdefault(tenant_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscriptions.get(tenant_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[tenant_id]

    def subscriber_count(self, tenant_id: TenantId | None = None) -> int:
        if tenant_id is not None:
            return len(self._subscriptions.get(tenant_id, ()))
        return sum(len(s) for s in self._subscriptions.values())
