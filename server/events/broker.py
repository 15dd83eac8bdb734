"""Server layer: the in-process broker that fans status changes out to subscribers.

It hears of changes from `publish` (one process, SQLite) or from `server.events.pg_broker`, which
delivers every process's changes here (PostgreSQL). A subscriber may start from a position in
the tenant's history: it gets the recorded changes after it, then the live ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from domain.model import TenantId
from domain.ports import ChangePosition, StatusChange
from resolvers.context import SubscriberLagging

# A subscriber this far behind is told so (`SubscriberLagging`) rather than queueing without
# bound or silently losing changes: it can subscribe again from its last position.
QUEUE_LIMIT = 1000
# Catch-up reads the history in pages of this many changes.
REPLAY_PAGE = 500


class ChangeHistory(Protocol):
    async def after(
        self, tenant_id: TenantId, position: ChangePosition, limit: int
    ) -> Sequence[StatusChange]:
        """The tenant's first `limit` status changes after `position`, in history order."""
        ...


class Subscription:
    """One subscriber's changes, queued until it takes them.

    A deque and at most one waiting future, not an `asyncio.Queue`: a thousand subscribers
    each held a queue's three deques and event, ~3 KiB apiece, for this one consumer."""

    def __init__(self, tenant_id: TenantId) -> None:
        self.tenant_id = tenant_id
        self._queue: deque[StatusChange] = deque()
        self._lagging = False
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, change: StatusChange) -> None:
        if self._lagging:
            return
        if len(self._queue) >= QUEUE_LIMIT:
            # Everything queued is still delivered; then the subscriber hears it fell behind.
            self._lagging = True
            return
        self._queue.append(change)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[StatusChange]:
        return self

    async def __anext__(self) -> StatusChange:
        while not self._queue:
            if self._lagging:
                raise SubscriberLagging(f"more than {QUEUE_LIMIT} changes behind")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()


class Broker:
    """Implements the domain's `ChangePublisher`; each tenant hears only its own changes."""

    def __init__(self, history: ChangeHistory | None = None) -> None:
        self._subscriptions: dict[TenantId, set[Subscription]] = {}
        self._history = history

    async def publish(self, changes: Sequence[StatusChange]) -> None:
        self.deliver(changes)

    def deliver(self, changes: Sequence[StatusChange]) -> None:
        for change in changes:
            for subscription in self._subscriptions.get(change.tenant_id, ()):
                subscription.offer(change)

    @asynccontextmanager
    async def subscribe(
        self, tenant_id: TenantId, after: ChangePosition | None = None
    ) -> AsyncIterator[AsyncIterator[StatusChange]]:
        """The tenant's live changes; with `after`, first the recorded ones after it."""
        # Registered before the history is read, so no change can fall in between.
        subscription = Subscription(tenant_id)
        self._subscriptions.setdefault(tenant_id, set()).add(subscription)
        stream = None if after is None else self._catch_up(subscription, after)
        try:
            yield subscription if stream is None else stream
        finally:
            if stream is not None:
                await stream.aclose()
            subscribers = self._subscriptions.get(tenant_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[tenant_id]

    async def _catch_up(
        self, live: Subscription, after: ChangePosition
    ) -> AsyncGenerator[StatusChange, None]:
        if self._history is None:
            raise RuntimeError("this broker keeps no history to catch up from")
        replayed: set[tuple[str, int]] = set()
        position = after
        while True:
            page = await self._history.after(live.tenant_id, position, REPLAY_PAGE)
            for change in page:
                replayed.add((change.certificate_id, change.version))
                yield change
            if len(page) < REPLAY_PAGE:
                break
            position = page[-1].position
        async for change in live:
            # Queued while the history was read: the replay may have given it already.
            if (change.certificate_id, change.version) in replayed or change.position <= after:
                continue
            yield change

    def tenants(self) -> list[TenantId]:
        """The tenants someone here subscribes for."""
        return list(self._subscriptions)

    def subscriber_count(self, tenant_id: TenantId | None = None) -> int:
        if tenant_id is not None:
            return len(self._subscriptions.get(tenant_id, ()))
        return sum(len(s) for s in self._subscriptions.values())
