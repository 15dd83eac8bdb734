"""Live subscriptions asked alike run once, each socket with a queue of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult

from domain.model import TenantId
from resolvers.context import Caller, Services
from server.events import multiplex
from server.events.multiplex import Multiplexer, Result

FEED = (
    "subscription Feed($ids: [ID!]) { certificateStatusChanged(certificateIds: $ids) { status } }"
)
ACME = Caller(TenantId("t-acme"), "acme")
GLOBEX = Caller(TenantId("t-globex"), "globex")


class FakeSchema:
    """Runs every subscription as one stream of the results the test sends."""

    def __init__(self) -> None:
        self.runs: list[asyncio.Queue[ExecutionResult | None]] = []
        self.closed = 0

    async def subscribe(self, query: str, **_: Any) -> AsyncGenerator[ExecutionResult, None]:
        results: asyncio.Queue[ExecutionResult | None] = asyncio.Queue()
        self.runs.append(results)
        return self._stream(results)

    async def _stream(
        self, results: asyncio.Queue[ExecutionResult | None]
    ) -> AsyncGenerator[ExecutionResult, None]:
        try:
            while (result := await results.get()) is not None:
                yield result
        finally:
            self.closed += 1


class Setup:
    def __init__(self) -> None:
        self.schema = FakeSchema()
        self.services = cast(Services, object())
        self.multiplexer = Multiplexer()

    def join(
        self,
        caller: Caller = ACME,
        query: str = FEED,
        variables: dict[str, Any] | None = None,
    ) -> AsyncGenerator[Result, None]:
        joined = self.multiplexer.join(
            cast(BaseSchema, self.schema), self.services, caller, query, variables, None
        )
        assert joined is not None
        return joined

    async def started(self, runs: int) -> None:
        for _ in range(10):  # the group's task runs its first steps
            await asyncio.sleep(0)
        assert len(self.schema.runs) == runs


async def listening(stream: AsyncGenerator[Result, None]) -> asyncio.Task[Result]:
    """The stream's next result, awaited in the background (a stream joins once iterated)."""
    task = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    return task


def result(status: str) -> ExecutionResult:
    return ExecutionResult(data={"certificateStatusChanged": {"status": status}}, errors=None)


async def next_of(stream: AsyncGenerator[Result, None]) -> Result:
    async with asyncio.timeout(5):
        return await anext(stream)


async def test_sockets_asking_alike_share_one_run_and_each_gets_every_result() -> None:
    setup = Setup()
    first, second = await listening(setup.join()), await listening(setup.join())
    await setup.started(1)
    assert setup.multiplexer.sockets(ACME.tenant_id) == 2
    sent = result("ISSUED")
    setup.schema.runs[0].put_nowait(sent)
    assert await first is sent
    assert await second is sent
    assert len(setup.schema.runs) == 1


async def test_other_variables_or_another_caller_run_apart() -> None:
    setup = Setup()
    await listening(setup.join())
    await listening(setup.join(variables={"ids": ["x"]}))
    await listening(setup.join(caller=GLOBEX))
    await setup.started(3)
    assert setup.multiplexer.sockets(GLOBEX.tenant_id) == 1


@pytest.mark.parametrize(
    "query",
    [
        'subscription { certificateStatusChanged(after: "c") { status } }',
        'mutation { withdrawApplication(input: {certificateId: "x"}) { __typename } }',
        "query { certificates { totalCount } }",
        "subscription {",
    ],
)
async def test_catch_up_and_anything_but_a_live_subscription_runs_alone(query: str) -> None:
    setup = Setup()
    joined = setup.multiplexer.join(
        cast(BaseSchema, setup.schema), setup.services, ACME, query, None, None
    )
    assert joined is None


async def test_a_socket_that_falls_behind_is_told_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(multiplex, "QUEUE_LIMIT", 2)
    setup = Setup()
    slow, fast = setup.join(), setup.join()
    slow_first, fast_first = await listening(slow), await listening(fast)
    await setup.started(1)
    sent = [result("A"), result("B"), result("C"), result("D")]
    setup.schema.runs[0].put_nowait(sent[0])
    assert await fast_first is sent[0]
    assert await slow_first is sent[0]
    for each in sent[1:]:
        setup.schema.runs[0].put_nowait(each)
        assert await next_of(fast) is each
    # The slow one had room for two more: it gets them, then hears it fell behind, then ends.
    assert await next_of(slow) is sent[1]
    assert await next_of(slow) is sent[2]
    told = await next_of(slow)
    assert told.data is None and told.errors is not None
    assert told.errors[0].extensions == {"code": "SUBSCRIBER_LAGGING"}
    with pytest.raises(StopAsyncIteration):
        await next_of(slow)
    fifth = result("E")
    setup.schema.runs[0].put_nowait(fifth)
    assert await next_of(fast) is fifth


async def test_the_run_ends_with_its_last_socket_and_the_next_one_starts_anew() -> None:
    setup = Setup()
    first, second = await listening(setup.join()), await listening(setup.join())
    await setup.started(1)
    first.cancel()
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    await setup.started(1)
    assert setup.schema.closed == 1
    await listening(setup.join())
    await setup.started(2)


async def test_when_the_run_ends_every_socket_ends() -> None:
    setup = Setup()
    first, second = await listening(setup.join()), await listening(setup.join())
    await setup.started(1)
    setup.schema.runs[0].put_nowait(None)
    for ended in (first, second):
        with pytest.raises(StopAsyncIteration):
            await ended
