"""The broker's subscriptions: catching up from the change feed, then live, none missed or
doubled, in commit order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, make_url
from sqlalchemy.util import await_only

from domain.model import CertificateId, TenantId
from domain.ports import ChangePosition, StatusChange
from domain.sandbox import SandboxDecision
from domain.service import CertificateService
from domain.statuses import CertificateStatus
from resolvers.context import FeedChange, SubscriberLagging, UnknownPosition
from server.clock import SystemClock
from server.events.broker import QUEUE_LIMIT, Broker
from server.migrate import upgrade
from server.persistence.changes import SqlChangeHistory
from server.seed import drive_to
from tests.resolvers.conftest import eventually
from tests.server.conftest import Stack, build_stack
from tests.support import counting_statements

S = CertificateStatus
TENANT = TenantId("t1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def change(sequence: int, certificate: str = "c1", version: int = 1) -> FeedChange:
    return FeedChange(
        sequence,
        StatusChange(
            tenant_id=TENANT,
            certificate_id=CertificateId(certificate),
            previous_status=S.PENDING_APPLICATION,
            status=S.PENDING_DOMAIN_VERIFICATION,
            changed_at=T0 + timedelta(seconds=sequence),
            version=version,
        ),
    )


class ScriptedHistory:
    """A feed holding `recorded`; `while_read` is delivered as it is first read (a change
    committed then)."""

    def __init__(self, recorded: list[FeedChange], while_read: list[FeedChange]) -> None:
        self.recorded = recorded
        self.while_read = while_read
        self.broker: Broker | None = None

    async def after(self, tenant_id: TenantId, sequence: int, limit: int) -> Sequence[FeedChange]:
        assert self.broker is not None
        self.broker.deliver(self.while_read)
        self.while_read = []
        return [c for c in self.recorded if c.sequence > sequence][:limit]

    async def last_sequence(self) -> int:
        return max((c.sequence for c in self.recorded), default=0)

    async def between(
        self, tenant_ids: Sequence[TenantId], after: int, up_to: int, limit: int
    ) -> Sequence[FeedChange]:
        return [c for c in self.recorded if after < c.sequence <= up_to][:limit]

    async def sequence_at(self, tenant_id: TenantId, position: ChangePosition) -> int | None:
        return None


def scripted(recorded: list[FeedChange], while_read: list[FeedChange]) -> Broker:
    history = ScriptedHistory(recorded, while_read)
    broker = history.broker = Broker(history)
    return broker


async def take(stream: AsyncIterator[FeedChange], count: int) -> list[FeedChange]:
    async with asyncio.timeout(10):
        return [await anext(stream) for _ in range(count)]


async def test_a_change_both_recorded_and_heard_live_is_delivered_once() -> None:
    old, missed, racing, later = change(1, "a"), change(2, "b"), change(3, "c"), change(4, "d")
    broker = scripted([old, missed, racing], while_read=[racing])
    async with broker.subscribe(TENANT, after=old.sequence) as stream:
        replayed = await take(aiter(stream), 2)
        broker.deliver([later])
        assert replayed + await take(aiter(stream), 1) == [missed, racing, later]


async def test_live_changes_at_or_before_the_cursor_are_not_repeated() -> None:
    seen, newer = change(5, "a"), change(6, "b")
    broker = scripted([seen], while_read=[seen])
    async with broker.subscribe(TENANT, after=seen.sequence) as stream:
        broker.deliver([newer])
        assert await take(aiter(stream), 1) == [newer]


async def test_catching_up_reads_a_long_history_page_by_page() -> None:
    recorded = [change(i, f"c{i:04}") for i in range(1, 1201)]
    broker = scripted(recorded, while_read=[])
    async with broker.subscribe(TENANT, after=0) as stream:
        assert await take(aiter(stream), 1200) == recorded


async def test_a_poll_delivers_what_was_committed_since_the_last_page_by_page() -> None:
    history = ScriptedHistory([change(1, "before")], while_read=[])
    broker = history.broker = Broker(history)
    async with broker.subscribe(TENANT) as live:
        committed = [change(i, f"c{i:04}") for i in range(2, 702)]
        history.recorded += committed
        assert await broker.poll() == 700
        assert await broker.poll() == 0
        assert await take(aiter(live), 700) == committed


async def test_a_position_that_names_no_change_is_refused_before_subscribing() -> None:
    broker = scripted([change(1)], while_read=[])
    with pytest.raises(UnknownPosition):
        async with broker.subscribe(TENANT, after=ChangePosition(T0, CertificateId("x"), 1)):
            pass
    assert broker.subscriber_count() == 0


async def test_a_subscriber_that_falls_behind_gets_what_was_queued_then_is_told() -> None:
    broker = scripted([], while_read=[])
    async with broker.subscribe(TENANT) as stream:
        broker.deliver([change(i, f"c{i}") for i in range(QUEUE_LIMIT + 5)])
        assert len(await take(aiter(stream), QUEUE_LIMIT)) == QUEUE_LIMIT
        with pytest.raises(SubscriberLagging):
            await anext(aiter(stream))


async def test_a_subscriber_that_comes_back_gets_every_change_it_missed_in_order(
    stack: Stack,
) -> None:
    broker = Broker(SqlChangeHistory(stack.db))
    service = CertificateService(stack.uow, stack.ca, SystemClock(), broker)
    first = await drive_to(
        service,
        stack.sandbox,
        stack.tenant,
        S.PENDING_DOMAIN_VERIFICATION,
        name="one",
        domain="one.io",
    )
    async with broker.subscribe(stack.tenant) as live:
        await service.withdraw(stack.tenant, first)
        [last_seen] = await take(aiter(live), 1)
    assert last_seen.change.status is S.CA_VERIFYING_WITHDRAWAL

    # Away: a second certificate is made and applied for, the first one's withdrawal decided.
    second = await drive_to(
        service,
        stack.sandbox,
        stack.tenant,
        S.PENDING_DOMAIN_VERIFICATION,
        name="two",
        domain="two.io",
    )
    order_id = (await stack.load(first)).ca_order_id
    assert order_id is not None and await stack.ca.decide(order_id, SandboxDecision.APPROVE)
    assert await service.sync_with_ca([CertificateId(first)]) == 1

    async with broker.subscribe(stack.tenant, after=last_seen.sequence) as stream:
        missed = await take(aiter(stream), 3)
        await service.withdraw(stack.tenant, second)
        [live_one] = await take(aiter(stream), 1)
    assert [(c.change.certificate_id, c.change.status) for c in missed] == [
        (second, S.PENDING_APPLICATION),
        (second, S.PENDING_DOMAIN_VERIFICATION),
        (first, S.PENDING_APPLICATION),
    ]
    assert [c.sequence for c in missed] == sorted(c.sequence for c in missed)
    assert live_one.sequence > missed[-1].sequence
    assert (live_one.change.certificate_id, live_one.change.status) == (
        second,
        S.CA_VERIFYING_WITHDRAWAL,
    )


async def test_an_old_cursor_position_resumes_after_the_change_it_names(stack: Stack) -> None:
    service = CertificateService(stack.uow, stack.ca, SystemClock(), stack.broker)
    first = await drive_to(
        service, stack.ca, stack.tenant, S.PENDING_DOMAIN_VERIFICATION, name="one", domain="one.io"
    )
    async with stack.broker.subscribe(stack.tenant, after=0) as stream:
        created, applied = await take(aiter(stream), 2)
    # What a cursor held before changes were numbered: the change's time, certificate, version.
    old = ChangePosition(created.change.changed_at, CertificateId(first), 1)

    async with stack.broker.subscribe(stack.tenant, after=old) as stream:
        assert await take(aiter(stream), 1) == [applied]
    with pytest.raises(UnknownPosition):
        async with stack.broker.subscribe(stack.other_tenant, after=old):
            pass


class Announcements:
    """A publisher that keeps what it is told, to hand it to the broker later."""

    def __init__(self) -> None:
        self.told: list[list[StatusChange]] = []

    async def publish(self, changes: Sequence[StatusChange]) -> None:
        self.told.append(list(changes))


async def test_changes_announced_out_of_order_reach_live_subscribers_in_commit_order(
    stack: Stack,
) -> None:
    announcements = Announcements()
    service = CertificateService(stack.uow, stack.ca, SystemClock(), announcements)
    # Nobody subscribes: telling the broker of a change reads nothing.
    await drive_to(
        service, stack.ca, stack.tenant, S.PENDING_APPLICATION, name="early", domain="e.io"
    )
    with counting_statements(stack.db) as statements:
        await stack.broker.publish(announcements.told.pop())
    assert statements == []

    async with stack.broker.subscribe(stack.tenant) as live:
        made = await drive_to(
            service, stack.ca, stack.tenant, S.PENDING_DOMAIN_VERIFICATION, name="x", domain="x.io"
        )
        await service.withdraw(stack.tenant, made)
        # The last announcement arrives first (another process was quicker to tell).
        for told in reversed(announcements.told):
            await stack.broker.publish(told)
        heard = await take(aiter(live), 3)
        # Each announcement read the feed again; none delivered a change twice.
        sentinel = await drive_to(
            service, stack.ca, stack.tenant, S.PENDING_APPLICATION, name="s", domain="s.io"
        )
        await stack.broker.publish(announcements.told[-1])
        [after] = await take(aiter(live), 1)
    assert (after.change.certificate_id, after.change.version) == (sentinel, 1)
    assert [(c.change.certificate_id, c.change.version) for c in heard] == [
        (made, 1),
        (made, 2),
        (made, 3),
    ]
    assert [c.sequence for c in heard] == sorted({c.sequence for c in heard})


async def created(stack: Stack, name: str) -> CertificateId:
    return await drive_to(
        stack.service, stack.ca, stack.tenant, S.PENDING_APPLICATION, name=name, domain=name
    )


async def test_on_postgresql_a_number_shows_only_once_every_smaller_one_is_committed(
    pg_url: str,
) -> None:
    await upgrade(pg_url)
    first, second = await build_stack(pg_url), await build_stack(pg_url)
    server = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    admin = await asyncpg.connect(server)
    # The first process's next change stops once it has its number, before it commits.
    numbered, go_on = asyncio.Event(), asyncio.Event()

    def hold(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO change_feed") and not numbered.is_set():
            numbered.set()
            await_only(go_on.wait())

    engine = first.engine.sync_engine
    event.listen(engine, "after_cursor_execute", hold)
    try:
        history = SqlChangeHistory(second.db)
        before = await history.last_sequence()
        a = asyncio.create_task(created(first, "a"))
        async with asyncio.timeout(10):
            await numbered.wait()
        b = asyncio.create_task(created(second, "b"))

        async def waiting_for_the_feed() -> bool:
            query = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return bool(await admin.fetchval(query))

        # The second process's change waits for the first's commit to take its number; a
        # reader meanwhile sees neither (not the second's number while the first's is in flight).
        await eventually(waiting_for_the_feed, what="the second writer to wait for the feed")
        assert await history.last_sequence() == before
        assert not b.done()
        go_on.set()
        made_a, made_b = await a, await b
        numbered_after = await history.after(first.tenant, before, 10)
    finally:
        go_on.set()
        event.remove(engine, "after_cursor_execute", hold)
        await admin.close()
        for stack in (first, second):
            await stack.db.dispose()
    assert [(c.change.certificate_id, c.sequence) for c in numbered_after] == [
        (made_a, before + 1),
        (made_b, before + 2),
    ]
