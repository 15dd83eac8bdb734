"""Fixtures for scale-out tests: real `certgraph serve` processes on one PostgreSQL database.

Each process is started as an operator would start it (the CLI, settings from the
environment); the tests talk to them over HTTP and WebSocket only, and read the database
directly to check what happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.model import CertificateId, TenantId
from resolvers.ids import CERTIFICATE, local_id, to_global_id
from server.container import Container
from server.migrate import upgrade
from server.persistence.database import Database
from server.persistence.tenants import TenantStore
from server.settings import Settings
from tests.support import CERTGRAPH, cli_env, drive_named, free_port, reap

TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # graphql-transport-ws

WITHDRAW = """
mutation Withdraw($id: ID!) {
  withdrawApplication(input: {certificateId: $id}) { __typename }
}
"""
DECIDE = """
mutation Decide($id: ID!, $decision: SandboxCaDecision!) {
  sandboxCaDecide(input: {certificateId: $id, decision: $decision}) { __typename }
}
"""
CHANGES = """
subscription Changes($ids: [ID!], $after: String) {
  certificateStatusChanged(certificateIds: $ids, after: $after) {
    previousStatus status cursor certificate { id status version }
  }
}
"""


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, within: float, what: str, every: float = 0.1
) -> None:
    """Wait for `condition` with a deadline (never a blind sleep)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class Process:
    """One `certgraph serve` process."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path
    token: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{self.base_url}/metrics")
        response.raise_for_status()
        values: dict[str, float] = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, _, value = line.partition(" ")
                values[name] = float(value)
        return values

    async def metric(self, name: str) -> float:
        return (await self.metrics()).get(name, 0.0)

    async def graphql(self, client: httpx.AsyncClient, query: str, **variables: Any) -> Any:
        response = await client.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert not body.get("errors"), body
        return body["data"]

    def kill(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


@dataclass
class Cluster:
    """Processes serving one PostgreSQL database, and a connection of the test's own to it."""

    database_url: str
    directory: Path
    db: Database
    tenant: TenantId
    token: str
    processes: list[Process] = field(default_factory=list)

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    @classmethod
    async def connect(cls, database_url: str, directory: Path) -> Cluster:
        """For a migrated database: a token for tenant `acme`, and the test's own engine."""
        db = Database(database_url)
        store = TenantStore(db)
        token = await store.create_token("acme")
        tenant = await store.tenant_for_token(token)
        assert tenant is not None
        return cls(database_url, directory, db, tenant.id, token)

    async def start(self, names: Iterable[str], **settings: str) -> list[Process]:
        """Start processes (each with `settings`, CERTGRAPH_ names lower-cased) and wait until
        each answers /readyz, which it does only once it listens for changes."""
        started = [self.spawn(name, settings) for name in names]

        async def ready() -> bool:
            for process in started:
                assert process.alive(), f"{process.name} exited:\n{process.output()}"
            async with httpx.AsyncClient(timeout=2) as client:
                for process in started:
                    try:
                        response = await client.get(f"{process.base_url}/readyz")
                    except httpx.TransportError:
                        return False
                    if response.status_code != 200:
                        return False
            return True

        await eventually(ready, within=60, what="the processes to be ready", every=0.2)
        return started

    def spawn(self, name: str, settings: dict[str, str], *options: str) -> Process:
        """Start `certgraph serve [options]`, without waiting for it."""
        port = free_port()
        log = self.directory / f"serve-{name}.log"
        values = {
            "sandbox": "1",
            "auth": "token",
            "ca_poll_seconds": "0.2",
            "ca_auto_decide_seconds": "0",
            # Hundreds of requests a second from one tenant are the point of these tests.
            "rate_limit_per_second": "0",
            **settings,
        }
        with log.open("wb") as output:
            popen = subprocess.Popen(
                [CERTGRAPH, "serve", "--port", str(port), *options],
                env=cli_env(self.database_url, **values),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, port, popen, log, self.token)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.alive():
                process.popen.send_signal(signal.SIGTERM)
        # All told first, so that they stop side by side.
        for process in self.processes:
            reap(process.popen)

    async def seed_pending(self, count: int, **settings: Any) -> list[str]:
        """`count` certificates in PENDING_DOMAIN_VERIFICATION, made through the service in
        this process (fast); their global ids."""
        container = Container(
            Settings(database_url=self.database_url, **settings), run_background=False
        )
        sandbox = container.sandbox
        assert sandbox is not None
        gate = asyncio.Semaphore(12)

        async def one(number: int) -> CertificateId:
            async with gate:
                return await drive_named(
                    container.service, sandbox, self.tenant, f"scale-{number:04}"
                )

        try:
            made = await asyncio.gather(*(one(n) for n in range(count)))
        finally:
            await container.close()
        return [to_global_id(CERTIFICATE, c) for c in made]


@pytest.fixture
async def cluster(pg_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    # Migrations run once, here, as `certgraph migrate` would: never by `serve`.
    await upgrade(pg_url)
    built = await Cluster.connect(pg_url, tmp_path)
    try:
        yield built
    finally:
        built.stop()
        await built.db.dispose()


class Subscriber:
    """A WebSocket subscription (gql, graphql-transport-ws) collecting what it receives."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self._task: asyncio.Task[None] | None = None

    def of(self, certificate_ids: set[str]) -> list[dict[str, Any]]:
        return [c for c in self.received if c["certificate"]["id"] in certificate_ids]

    async def until(
        self, condition: Callable[[list[dict[str, Any]]], bool], *, within: float, what: str
    ) -> list[dict[str, Any]]:
        async def holds() -> bool:
            assert not self.errors, self.errors
            return condition(self.received)

        await eventually(holds, within=within, what=what, every=0.05)
        return self.received


@asynccontextmanager
async def subscribed(
    process: Process, *, ids: list[str] | None = None, after: str | None = None
) -> AsyncIterator[Subscriber]:
    """Subscribe on `process`, and wait until the process has the subscription open."""
    subscriber = Subscriber()
    before = await process.metric("certgraph_subscriptions")
    transport = WebsocketsTransport(
        url=process.websocket_url,
        init_payload={"Authorization": f"Bearer {process.token}"},
        subprotocols=[TRANSPORT_WS],
    )

    async def pump() -> None:
        try:
            async with Client(transport=transport, execute_timeout=60) as session:
                request = GraphQLRequest(CHANGES, variable_values={"ids": ids, "after": after})
                async for result in session.subscribe(request):
                    subscriber.received.append(result["certificateStatusChanged"])
        except asyncio.CancelledError:
            raise
        except Exception as error:
            subscriber.errors.append(error)

    task = asyncio.create_task(pump())

    async def open_there() -> bool:
        assert not subscriber.errors, subscriber.errors
        return await process.metric("certgraph_subscriptions") > before

    try:
        await eventually(open_there, within=20, what=f"the subscription on {process.name}")
        yield subscriber
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def local(global_id: str) -> str:
    found = local_id(global_id, CERTIFICATE)
    assert found is not None
    return found
