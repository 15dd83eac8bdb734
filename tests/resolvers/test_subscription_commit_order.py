"""certificateStatusChanged(after:) resumes in commit order, not in the changes' own time.

A change stamped before another but committed after it (a transaction held open meanwhile by
another process, or a wall clock stepped back) must still reach a subscriber that resumes
from the other change's cursor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.util import await_only

from server.migrate import upgrade
from tests.resolvers.conftest import Api, eventually, start_api
from tests.resolvers.test_subscription_catch_up import CATCH_UP
from tests.resolvers.test_subscriptions import WITHDRAW, Subscriber

WITHDRAWN = "CA_VERIFYING_WITHDRAWAL"


async def subscribe(api: Api, ids: list[str] | None, after: str | None) -> Subscriber:
    stream = await api.schema.subscribe(
        CATCH_UP,
        variable_values={"ids": ids, "after": after},
        context_value=api.context(api.acme, cache=False),
    )
    assert isinstance(stream, AsyncGenerator)
    return Subscriber(stream)


async def listening(api: Api, subscribe: Callable[[], Awaitable[Subscriber]]) -> Subscriber:
    """A subscriber, once its subscription has reached the broker."""
    broker = api.container.broker
    before = broker.subscriber_count(api.acme.tenant_id)
    subscriber = await subscribe()

    async def registered() -> bool:
        return broker.subscriber_count(api.acme.tenant_id) > before

    await eventually(registered, what="the subscription to reach the broker")
    return subscriber


async def cursor_of(api: Api, certificate_id: str, change: Callable[[], Awaitable[Any]]) -> str:
    """The cursor a live subscriber to `certificate_id` gets with the change `change` makes."""
    subscriber = await listening(api, lambda: subscribe(api, [certificate_id], None))
    try:
        async with asyncio.timeout(10):
            await change()
        received = await subscriber.next()
    finally:
        await subscriber.close()
    assert received["status"] == WITHDRAWN
    cursor: str = received["cursor"]
    return cursor


async def resumed_changes(api: Api, cursor: str, later: str) -> list[tuple[str, str]]:
    """What a subscriber resuming from `cursor` gets, up to the withdrawal of `later` (made
    once it has resumed, so it comes after everything replayed)."""
    subscriber = await listening(api, lambda: subscribe(api, None, cursor))
    try:
        await api.data(WITHDRAW, {"id": later})
        received = [await subscriber.next()]
        while received[-1]["certificate"]["id"] != later:
            received.append(await subscriber.next())
    finally:
        await subscriber.close()
    return [(c["certificate"]["id"], c["status"]) for c in received]


async def test_a_change_committed_after_the_cursor_but_begun_before_it_is_replayed(
    pg_url: str,
) -> None:
    # Two serving processes on one PostgreSQL database (each with its engine and listener).
    await upgrade(pg_url)
    # No CA workers: one would wait on the row the held transaction has locked, holding others.
    first, second = await start_api(pg_url, worker=False), await start_api(pg_url, worker=False)
    third: Api | None = None
    try:
        a, b, later = await first.applied("a"), await second.applied("b"), await second.applied("c")
        # The first process's withdrawal of `a` stops inside its transaction, once its event is
        # written (stamped now), until the second process has committed a withdrawal of `b`.
        written, go_on = asyncio.Event(), asyncio.Event()

        def hold(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
            if statement.startswith("INSERT INTO certificate_events") and not written.is_set():
                written.set()
                await_only(go_on.wait())

        engine = first.container.db.engine.sync_engine
        event.listen(engine, "after_cursor_execute", hold)
        try:
            withdrawing_a = asyncio.create_task(first.data(WITHDRAW, {"id": a}))
            async with asyncio.timeout(10):
                await written.wait()
            cursor = await cursor_of(second, b, lambda: second.data(WITHDRAW, {"id": b}))
            assert not withdrawing_a.done()
            go_on.set()
            async with asyncio.timeout(10):
                await withdrawing_a
        finally:
            go_on.set()
            event.remove(engine, "after_cursor_execute", hold)

        # The subscriber comes back to a third process, which never heard of either change.
        third = await start_api(pg_url, worker=False)
        assert await resumed_changes(third, cursor, later) == [(a, WITHDRAWN), (later, WITHDRAWN)]
    finally:
        for api in (first, second, third):
            if api is not None:
                await api.container.close()


async def test_a_change_stamped_before_the_cursor_but_committed_after_it_is_replayed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, later = await api.applied("a"), await api.applied("b"), await api.applied("c")
    cursor = await cursor_of(api, b, lambda: api.data(WITHDRAW, {"id": b}))
    # The wall clock steps back a minute (or a writer stamped its change, then waited that
    # long for the write lock): `a` is stamped before `b`, committed after it.
    clock = api.container.clock
    monkeypatch.setattr(clock, "now", lambda: datetime.now(UTC) - timedelta(minutes=1))
    await api.data(WITHDRAW, {"id": a})
    monkeypatch.undo()

    assert await resumed_changes(api, cursor, later) == [(a, WITHDRAWN), (later, WITHDRAWN)]
