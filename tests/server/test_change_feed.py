"""The broker's subscriptions: catching up from the history, then live, none missed or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from domain.model import CertificateId, TenantId
from domain.ports import ChangePosition, StatusChange
from domain.sandbox import SandboxDecision
from domain.service import CertificateService
from domain.statuses import CertificateStatus
from resolvers.context import SubscriberLagging
from server.clock import SystemClock
from server.events.broker import QUEUE_LIMIT, Broker
from server.persistence.changes import SqlChangeHistory
from server.seed import drive_to
from tests.server.conftest import Stack

S = CertificateStatus
TENANT = TenantId("t1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def change(second: int, certificate: str = "c1", version: int = 1) -> StatusChange:
    return StatusChange(
        tenant_id=TENANT,
        certificate_id=CertificateId(certificate),
        previous_status=S.PENDING_APPLICATION,
        status=S.PENDING_DOMAIN_VERIFICATION,
        changed_at=T0 + timedelta(seconds=second),
        version=version,
    )


class ScriptedHistory:
    """A history holding `recorded`; `while_read` runs as it is read (a change committed then)."""

    def __init__(self, recorded: list[StatusChange], while_read: list[StatusChange]) -> None:
        self.recorded = recorded
        self.while_read = while_read
        self.broker: Broker | None = None

    async def after(
        self, tenant_id: TenantId, position: ChangePosition, limit: int
    ) -> Sequence[StatusChange]:
        assert self.broker is not None
        self.broker.deliver(self.while_read)
        self.while_read = []
        later = sorted(
            (c for c in self.recorded if c.position > position), key=lambda c: c.position
        )
        return later[:limit]


async def take(stream: AsyncIterator[StatusChange], count: int) -> list[StatusChange]:
    async with asyncio.timeout(10):
        return [await anext(stream) for _ in range(count)]


async def test_a_change_both_recorded_and_heard_live_is_delivered_once() -> None:
    old, missed, racing, later = change(1, "a"), change(2, "b"), change(3, "c"), change(4, "d")
    history = ScriptedHistory([old, missed, racing], while_read=[racing])
    broker = history.broker = Broker(history)
    async with broker.subscribe(TENANT, after=old.position) as stream:
        replayed = await take(aiter(stream), 2)
        broker.deliver([later])
        assert replayed + await take(aiter(stream), 1) == [missed, racing, later]


async def test_live_changes_at_or_before_the_cursor_are_not_repeated() -> None:
    seen, newer = change(5, "a"), change(6, "b")
    history = ScriptedHistory([seen], while_read=[seen])
    broker = history.broker = Broker(history)
    async with broker.subscribe(TENANT, after=seen.position) as stream:
        broker.deliver([newer])
        assert await take(aiter(stream), 1) == [newer]


async def test_catching_up_reads_a_long_history_page_by_page() -> None:
    recorded = [change(i, f"c{i:04}") for i in range(1, 1201)]
    history = ScriptedHistory(recorded, while_read=[])
    broker = history.broker = Broker(history)
    async with broker.subscribe(TENANT, after=ChangePosition(T0, CertificateId(""), 0)) as stream:
        assert await take(aiter(stream), 1200) == recorded


async def test_a_subscriber_that_falls_behind_gets_what_was_queued_then_is_told() -> None:
    broker = Broker()
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
    assert last_seen.status is S.CA_VERIFYING_WITHDRAWAL

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

    async with broker.subscribe(stack.tenant, after=last_seen.position) as stream:
        missed = await take(aiter(stream), 3)
        await service.withdraw(stack.tenant, second)
        [live_one] = await take(aiter(stream), 1)
    assert [(c.certificate_id, c.status) for c in missed] == [
        (second, S.PENDING_APPLICATION),
        (second, S.PENDING_DOMAIN_VERIFICATION),
        (first, S.PENDING_APPLICATION),
    ]
    assert [c.position for c in missed] == sorted(c.position for c in missed)
    assert (live_one.certificate_id, live_one.status) == (second, S.CA_VERIFYING_WITHDRAWAL)
