"""Status changes between processes over PostgreSQL LISTEN/NOTIFY (two containers, one database).

Each container is what one `certgraph serve` process runs: its own engine, broker, listening
connection and service. The real multi-process runs are in tests/scale/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import make_url

from domain.model import TenantId
from domain.statuses import CertificateStatus, CertificateType, DomainType
from resolvers.context import FeedChange
from server.container import Container
from server.migrate import upgrade
from server.settings import Settings
from tests.support import drive_named

S = CertificateStatus


class Listener:
    """Collects what one subscription of one container hears, in the background."""

    def __init__(self) -> None:
        self.heard: list[FeedChange] = []
        self._arrived = asyncio.Condition()

    async def pump(self, stream: AsyncIterator[FeedChange]) -> None:
        async for change in stream:
            async with self._arrived:
                self.heard.append(change)
                self._arrived.notify_all()

    async def until(self, count: int) -> list[FeedChange]:
        async with asyncio.timeout(15), self._arrived:
            await self._arrived.wait_for(lambda: len(self.heard) >= count)
        return list(self.heard)


@pytest.fixture
async def processes(pg_url: str) -> AsyncIterator[tuple[Container, Container]]:
    await upgrade(pg_url)
    settings = Settings(database_url=pg_url, worker=False, ca_poll_seconds=0.05)
    containers = (Container(settings), Container(settings))
    for container in containers:
        await container.start()
    yield containers
    for container in containers:
        await container.close()


async def listening(container: Container, tenant: TenantId, stack: AsyncExitStack) -> Listener:
    listener = Listener()
    stream = await stack.enter_async_context(container.broker.subscribe(tenant))
    task = asyncio.create_task(listener.pump(stream))
    stack.callback(task.cancel)
    return listener


def counter(container: Container, name: str) -> float | None:
    registry = CollectorRegistry()
    container.register_metrics(registry)
    return registry.get_sample_value(name)


def keys(changes: list[FeedChange]) -> list[tuple[str, int, CertificateStatus]]:
    return [(c.change.certificate_id, c.change.version, c.change.status) for c in changes]


async def test_a_change_reaches_the_subscribers_of_every_process_exactly_once(
    processes: tuple[Container, Container],
) -> None:
    a, b = processes
    assert a.pg_changes is not None and b.pg_changes is not None
    tenant = (await a.tenants.ensure_tenant("acme")).id
    async with AsyncExitStack() as stack:
        on_a = await listening(a, tenant, stack)
        on_b = await listening(b, tenant, stack)
        assert a.sim_ca is not None
        made = await drive_named(a.service, a.sandbox, tenant, "x")
        await a.service.withdraw(tenant, made)
        # A last change, heard after the others: nothing was delivered twice before it.
        await a.service.create_certificate(
            tenant,
            name="sentinel",
            type=CertificateType.DV,
            domain_type=DomainType.SINGLE,
            brand="DigiCert",
            domain_quota=1,
            validity_years=1,
        )
        expected = [
            (made, 1, S.PENDING_APPLICATION),
            (made, 2, S.PENDING_DOMAIN_VERIFICATION),
            (made, 3, S.CA_VERIFYING_WITHDRAWAL),
        ]
        for listener in (on_a, on_b):
            heard = await listener.until(4)
            assert keys(heard)[:3] == expected
            assert heard[3].change.status is S.PENDING_APPLICATION
            assert heard[3].change.certificate_id != made
            assert len(listener.heard) == 4
    # Every change was announced once, heard by both processes, delivered once in each.
    assert counter(a, "certgraph_changes_published_total") == 4
    for process in (a, b):
        assert counter(process, "certgraph_changes_heard_total") == 4
        assert counter(process, "certgraph_changes_delivered_total") == 4


async def test_a_process_that_lost_its_listening_connection_catches_up_once_back(
    processes: tuple[Container, Container], monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    a, b = processes
    assert a.sim_ca is not None and b.pg_changes is not None
    tenant = (await a.tenants.ensure_tenant("acme")).id
    async with AsyncExitStack() as stack:
        on_b = await listening(b, tenant, stack)
        before = await drive_named(a.service, a.sandbox, tenant, "b")
        assert len(await on_b.until(2)) == 2

        # B's connection drops, and B cannot reconnect for a while.
        dsn = b.pg_changes._dsn
        monkeypatch.setattr(b.pg_changes, "_dsn", "postgresql://postgres@127.0.0.1:1/nowhere")
        pid = b.pg_changes.listener_pid
        server = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
        admin = await asyncpg.connect(server)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        async with asyncio.timeout(10):
            while b.pg_changes.listening.is_set():  # noqa: ASYNC110 - no event marks a drop
                await asyncio.sleep(0.01)

        during = await drive_named(a.service, a.sandbox, tenant, "d")
        await a.service.withdraw(tenant, before)
        monkeypatch.setattr(b.pg_changes, "_dsn", dsn)

        heard = await on_b.until(5)
        await a.service.withdraw(tenant, during)
        heard = await on_b.until(6)
    assert keys(heard) == [
        (before, 1, S.PENDING_APPLICATION),
        (before, 2, S.PENDING_DOMAIN_VERIFICATION),
        (during, 1, S.PENDING_APPLICATION),
        (during, 2, S.PENDING_DOMAIN_VERIFICATION),
        (before, 3, S.CA_VERIFYING_WITHDRAWAL),
        (during, 3, S.CA_VERIFYING_WITHDRAWAL),
    ]
    assert counter(b, "certgraph_listen_reconnects_total") == 1
