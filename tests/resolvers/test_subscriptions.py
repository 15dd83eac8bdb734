"""certificateStatusChanged through the schema: per tenant, filtered by id, always fresh."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

from domain.model import Certificate, TenantId
from domain.reading import CertificateReader
from resolvers.context import Caller, Context
from tests.resolvers.conftest import Api, eventually

SUBSCRIPTION = """
subscription Changes($ids: [ID!]) {
  certificateStatusChanged(certificateIds: $ids) {
    previousStatus status changedAt
    certificate {
      id name status version
      lastWithdrawal { status failureReason }
      events { kind }
    }
  }
}
"""
WITHDRAW = """
mutation($id: ID!) { withdrawApplication(input: {certificateId: $id}) { __typename } }
"""


class Subscriber:
    """Collects what one subscription yields, in the background."""

    def __init__(self, stream: AsyncGenerator[Any, None]) -> None:
        self._stream = stream
        self._received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for result in self._stream:
            assert not result.errors, result.errors
            await self._received.put(result.data["certificateStatusChanged"])

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            return await self._received.get()

    def pending(self) -> int:
        return self._received.qsize()

    async def close(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        await self._stream.aclose()


@asynccontextmanager
async def subscribed(
    api: Api, caller: Caller, ids: list[str] | None = None, context: Context | None = None
) -> AsyncIterator[Subscriber]:
    broker = api.container.broker
    before = broker.subscriber_count(caller.tenant_id)
    stream = await api.schema.subscribe(
        SUBSCRIPTION,
        variable_values={"ids": ids},
        # As over a WebSocket: one context for the whole connection, loaders not caching.
        context_value=context or api.context(caller, cache=False),
    )
    assert isinstance(stream, AsyncGenerator)
    subscriber = Subscriber(stream)

    async def listening() -> bool:
        return broker.subscriber_count(caller.tenant_id) > before

    await eventually(listening, what="the subscription to reach the broker")
    try:
        yield subscriber
    finally:
        await subscriber.close()


async def test_a_subscriber_sees_the_whole_withdrawal_with_fresh_data(api: Api) -> None:
    certificate_id = await api.applied()
    async with subscribed(api, api.acme, [certificate_id]) as subscriber:
        await api.data(WITHDRAW, {"id": certificate_id})
        requested = await subscriber.next()
        assert requested["previousStatus"] == "PENDING_DOMAIN_VERIFICATION"
        assert requested["status"] == "CA_VERIFYING_WITHDRAWAL"
        assert requested["certificate"]["lastWithdrawal"] == {
            "status": "PENDING",
            "failureReason": None,
        }

        await api.decide(certificate_id, "APPROVE")
        succeeded = await subscriber.next()
        assert succeeded["previousStatus"] == "CA_VERIFYING_WITHDRAWAL"
        assert succeeded["status"] == "PENDING_APPLICATION"
        certificate = succeeded["certificate"]
        # Read afresh, although the context is the same as for the first change.
        assert certificate["status"] == "PENDING_APPLICATION"
        assert certificate["lastWithdrawal"]["status"] == "SUCCEEDED"
        assert certificate["events"][-1] == {"kind": "WITHDRAWAL_SUCCEEDED"}
        assert certificate["version"] == requested["certificate"]["version"] + 1


async def test_an_issue_during_a_withdrawal_reaches_the_subscriber(api: Api) -> None:
    certificate_id = await api.applied()
    async with subscribed(api, api.acme) as subscriber:
        await api.data(WITHDRAW, {"id": certificate_id})
        assert (await subscriber.next())["status"] == "CA_VERIFYING_WITHDRAWAL"
        await api.decide(certificate_id, "ISSUE")
        issued = await subscriber.next()
        assert issued["status"] == "ISSUED"
        assert issued["certificate"]["lastWithdrawal"] == {
            "status": "FAILED",
            "failureReason": "CA_ALREADY_APPROVED",
        }


async def test_subscribers_never_see_another_tenants_certificates(api: Api) -> None:
    acme_certificate = await api.applied("acme-web")
    globex_certificate = await api.applied("globex-web", caller=api.globex)
    async with (
        subscribed(api, api.globex) as everything,
        subscribed(api, api.globex, [acme_certificate, "malformed", globex_certificate]) as listed,
    ):
        await api.data(WITHDRAW, {"id": acme_certificate})
        await api.decide(acme_certificate, "APPROVE")
        await api.wait_for_status(acme_certificate, "PENDING_APPLICATION")
        # Then a change of globex's own: the first (and only) thing either subscriber hears.
        await api.data(WITHDRAW, {"id": globex_certificate}, caller=api.globex)
        for subscriber in (everything, listed):
            change = await subscriber.next()
            assert change["certificate"]["id"] == globex_certificate
            assert subscriber.pending() == 0


async def test_a_subscription_to_some_ids_ignores_the_others(api: Api) -> None:
    watched = await api.applied("watched")
    ignored = await api.applied("ignored")
    async with subscribed(api, api.acme, [watched]) as subscriber:
        await api.data(WITHDRAW, {"id": ignored})
        await api.data(WITHDRAW, {"id": watched})
        change = await subscriber.next()
        assert change["certificate"]["id"] == watched
        assert subscriber.pending() == 0


async def test_a_connection_context_reads_fresh_data_for_every_operation(api: Api) -> None:
    certificate_id = await api.applied()
    connection = api.context(api.acme, cache=False)
    query = "query($id: ID!) { certificate(id: $id) { status events { kind } } }"
    before = await api.schema.execute(query, {"id": certificate_id}, context_value=connection)
    await api.data(WITHDRAW, {"id": certificate_id})
    after = await api.schema.execute(query, {"id": certificate_id}, context_value=connection)
    assert before.data is not None and after.data is not None
    assert before.data["certificate"]["status"] == "PENDING_DOMAIN_VERIFICATION"
    assert after.data["certificate"]["status"] == "CA_VERIFYING_WITHDRAWAL"
    assert len(after.data["certificate"]["events"]) == len(before.data["certificate"]["events"]) + 1


async def test_subscribers_asking_the_same_share_one_execution_per_change(api: Api) -> None:
    certificate_id = await api.applied()
    # As over WebSockets: one set of services for every connection, one context per connection.
    first = api.context(api.acme, cache=False)
    second = Context(first.services, api.acme, cache_loads=False)
    third = Context(first.services, api.acme, cache_loads=False)
    async with (
        subscribed(api, api.acme, context=first) as one,
        subscribed(api, api.acme, context=second) as same,
        subscribed(api, api.acme, [certificate_id], context=third) as other_variables,
    ):
        await api.data(WITHDRAW, {"id": certificate_id})
        shared, again, own = [await s.next() for s in (one, same, other_variables)]
    assert again is shared
    assert own == shared and own is not shared


class GatedReader:
    """A reader whose reads of certificates wait until let through, and are counted."""

    def __init__(self, reader: CertificateReader) -> None:
        self._reader = reader
        self.asked = asyncio.Event()
        self.gate = asyncio.Event()
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    async def certificates(
        self, tenant_id: TenantId, ids: Sequence[str]
    ) -> Mapping[str, Certificate]:
        self.reads += 1
        self.asked.set()
        await self.gate.wait()
        return await self._reader.certificates(tenant_id, ids)


async def test_a_subscriber_leaving_during_a_shared_read_leaves_the_others_their_change(
    api: Api,
) -> None:
    certificate_id = await api.applied()
    plain = api.context(api.acme, cache=False).services
    reader = GatedReader(plain.reader)
    services = dataclasses.replace(plain, reader=reader)
    leaving_context = Context(services, api.acme, cache_loads=False)
    staying_context = Context(services, api.acme, cache_loads=False)
    async with subscribed(api, api.acme, context=staying_context) as staying:
        async with subscribed(api, api.acme, context=leaving_context):
            await api.data(WITHDRAW, {"id": certificate_id})
            async with asyncio.timeout(10):
                await reader.asked.wait()
        reader.gate.set()
        change = await staying.next()
    assert change["certificate"]["id"] == certificate_id
    assert reader.reads == 1
