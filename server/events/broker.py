"""Server layer: the in-process broker that fans status changes out to subscribers.

Changes reach subscribers from the change feed (`server.persistence.changes`), read in commit
order: `poll` reads what was committed since it last read, and runs when this process commits
a change (`publish`, SQLite: the one serving process) or hears that another did
(`server.events.pg_broker`, PostgreSQL). Live subscribers so get each change once and in feed order,
so that the cursor of the last one they received is a place to resume from with nothing
missed. A subscriber may start after a feed sequence: it gets the recorded changes after it,
then the live ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from domain.model import TenantId
from domain.ports import ChangePosition, StatusChange
from resolvers.context import FeedChange, SubscriberLagging, UnknownPosition

log = logging.getLogger(__name__)

# A subscriber this far behind is told so (`SubscriberLagging`) rather than queueing without
# bound or silently losing changes: it can subscribe again from its last position.
QUEUE_LIMIT = 1000
# The feed is read in pages of this many changes.
REPLAY_PAGE = 500


class ChangeHistory(Protocol):
    async def after(self, tenant_id: TenantId, sequence: int, limit: int) -> Sequence[FeedChange]:
        """The tenant's first `limit` status changes committed after `sequence`."""
        ...

    async def last_sequence(self) -> int:
        """The feed's latest number: every smaller one is committed."""
        ...

    async def between(
        self, tenant_ids: Sequence[TenantId], after: int, up_to: int, limit: int
    ) -> Sequence[FeedChange]:
        """The first `limit` changes of these tenants numbered in (after, up_to]."""
        ...

    async def sequence_at(self, tenant_id: TenantId, position: ChangePosition) -> int | None:
        """The number of the tenant's change at a position (cursors before numbering)."""
        ...


class Subscription:
    """One subscriber's changes, queued until it takes them.

    A deque and at most one waiting future, not an `asyncio.Queue`: a thousand subscribers
    each held a queue's three deques and event, ~3 KiB apiece, for this one consumer."""

    def __init__(self, tenant_id: TenantId) -> None:
        self.tenant_id = tenant_id
        self._queue: deque[FeedChange] = deque()
        self._lagging = False
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, change: FeedChange) -> None:
        if self._lagging:
            return
        if len(self._queue) >= QUEUE_LIMIT:
            # Everything queued is still delivered; then the subscriber hears it fell behind.
            self._lagging = True
            return
        self._queue.append(change)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[FeedChange]:
        return self

    async def __anext__(self) -> FeedChange:
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

    def __init__(self, history: ChangeHistory) -> None:
        self._subscriptions: dict[TenantId, set[Subscription]] = {}
        self._history = history
        # The feed is delivered up to here; None while nobody subscribes (nothing is read then).
        self._delivered_up_to: int | None = None
        self._polling = False
        self._poll_again = False

    async def publish(self, changes: Sequence[StatusChange]) -> None:
        """This process committed `changes`: deliver them (with any others committed since)."""
        if not changes:
            return
        try:
            await self.poll()
        except Exception:
            # Committed: they stay in the feed, and the next poll delivers them.
            log.warning("could not read the change feed for subscribers", exc_info=True)

    async def poll(self) -> int:
        """Deliver the changes committed since the last poll to this process's subscribers, in
        feed order; returns how many. A poll asked for while one runs is made by that one (it
        reads again before it stops), so polls never overlap and deliver in order."""
        self._poll_again = True
        if self._polling:
            return 0
        self._polling = True
        delivered = 0
        try:
            while self._poll_again:
                self._poll_again = False
                delivered += await self._read_feed()
        finally:
            self._polling = False
        return delivered

    async def _read_feed(self) -> int:
        if self._delivered_up_to is None or not self._subscriptions:
            self._delivered_up_to = None
            return 0
        after = self._delivered_up_to
        up_to = await self._history.last_sequence()
        # Taken after `up_to` is read: a subscriber that came before that read is among them,
        # and one that came after it is older than anything committed after `up_to`.
        tenants = self.tenants()
        delivered = 0
        while after < up_to and tenants:
            page = await self._history.between(tenants, after, up_to, REPLAY_PAGE)
            self.deliver(page)
            delivered += len(page)
            if len(page) < REPLAY_PAGE:
                break
            after = page[-1].sequence
            # Delivered: a read that fails after this page must not deliver it again.
            self._advance(after)
        self._advance(up_to)
        return delivered

    def _advance(self, sequence: int) -> None:
        if self._delivered_up_to is not None:
            self._delivered_up_to = max(self._delivered_up_to, sequence)

    def deliver(self, changes: Sequence[FeedChange]) -> None:
        for entry in changes:
            for subscription in self._subscriptions.get(entry.change.tenant_id, ()):
                subscription.offer(entry)

    @asynccontextmanager
    async def subscribe(
        self, tenant_id: TenantId, after: int | ChangePosition | None = None
    ) -> AsyncIterator[AsyncIterator[FeedChange]]:
        """The tenant's live changes; with `after`, first the recorded ones after it."""
        if isinstance(after, ChangePosition):
            after = await self._sequence_at(tenant_id, after)
        elif after and after > await self._history.last_sequence():
            # A cursor from the future would silently hold back every change until then.
            raise UnknownPosition(f"the feed has no change numbered {after}")
        if self._delivered_up_to is None:
            # Nobody subscribed until now: polls start from what is committed at this moment.
            up_to = await self._history.last_sequence()
            if self._delivered_up_to is None:
                self._delivered_up_to = up_to
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

    async def _sequence_at(self, tenant_id: TenantId, position: ChangePosition) -> int:
        sequence = await self._history.sequence_at(tenant_id, position)
        if sequence is None:
            raise UnknownPosition(f"no change of tenant {tenant_id} is at {position}")
        return sequence

    async def _catch_up(self, live: Subscription, after: int) -> AsyncGenerator[FeedChange, None]:
        while True:
            page = await self._history.after(live.tenant_id, after, REPLAY_PAGE)
            for entry in page:
                yield entry
            if page:
                after = page[-1].sequence
            if len(page) < REPLAY_PAGE:
                break
        async for entry in live:
            # Queued while the history was read: the replay may have given it already.
            if entry.sequence <= after:
                continue
            after = entry.sequence
            yield entry

    def tenants(self) -> list[TenantId]:
        """The tenants someone here subscribes for."""
        return list(self._subscriptions)

    def subscriber_count(self, tenant_id: TenantId | None = None) -> int:
        if tenant_id is not None:
            return len(self._subscriptions.get(tenant_id, ()))
        return sum(len(s) for s in self._subscriptions.values())
