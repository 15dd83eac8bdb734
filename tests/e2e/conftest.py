"""Fixtures for end-to-end tests: a real uvicorn server on a free port, real GraphQL clients."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from gql import Client, GraphQLRequest
from gql.client import AsyncClientSession
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from domain.model import TenantId
from server.container import Container
from server.http.app import create_app
from server.http.serving import serving_config
from server.persistence.database import Database
from server.persistence.tenants import TenantStore
from server.settings import Settings
from tests.support import free_port, wait_until

TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # graphql-transport-ws
LEGACY_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL  # graphql-ws


@dataclass
class Server:
    """A certgraph server running in uvicorn on a thread of its own."""

    base_url: str
    database_url: str
    container: Container

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def websocket_url(self) -> str:
        return self.graphql_url.replace("http://", "ws://", 1)

    def subscriber_count(self, tenant_id: TenantId) -> int:
        return self.container.broker.subscriber_count(tenant_id)

    async def token(self, tenant: str) -> tuple[str, TenantId]:
        """A fresh token for `tenant` (minted on a connection of the test's own)."""
        db = Database(self.database_url)
        try:
            store = TenantStore(db)
            token = await store.create_token(tenant)
            found = await store.tenant_for_token(token)
        finally:
            await db.dispose()
        assert found is not None
        return token, found.id

    @asynccontextmanager
    async def http(self, token: str | None) -> AsyncIterator[AsyncClientSession]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = HTTPXAsyncTransport(url=self.graphql_url, headers=headers, timeout=30)
        async with Client(transport=transport, execute_timeout=30) as session:
            yield session

    @asynccontextmanager
    async def websocket(
        self, token: str | None, *, subprotocol: str = TRANSPORT_WS
    ) -> AsyncIterator[AsyncClientSession]:
        transport = WebsocketsTransport(
            url=self.websocket_url,
            init_payload={"Authorization": f"Bearer {token}"} if token else {},
            subprotocols=[subprotocol],
        )
        async with Client(transport=transport, execute_timeout=30) as session:
            yield session


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "sandbox": True,
        "ca_auto_decide_seconds": 0,
        "ca_poll_seconds": 0.1,
        "auth": "token",
        "env": "development",
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running(settings: Settings, **uvicorn_options: Any) -> Iterator[Server]:
    app = create_app(settings)
    port = free_port()
    # As `certgraph serve` configures uvicorn (head and WebSocket message limits included).
    options = {"log_level": "warning", **uvicorn_options}
    config = serving_config(settings, app, host="127.0.0.1", port=port, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield Server(f"http://127.0.0.1:{port}", settings.database_url, app.state.container)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not stop"


ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server(migrated_sqlite_url: str) -> Iterator[ServerFactory]:
    """Starts servers over one migrated SQLite file; all are stopped after the test.
    Keyword arguments are settings; `serving` overrides `serving_config`'s options."""
    with _Servers() as servers:

        def start(*, serving: dict[str, Any] | None = None, **overrides: Any) -> Server:
            return servers.start(settings_for(migrated_sqlite_url, **overrides), **(serving or {}))

        yield start


@pytest.fixture
def server(start_server: ServerFactory) -> Server:
    """Sandbox on, auth by token, the CA worker polling every 100 ms."""
    return start_server()


class _Servers:
    def __init__(self) -> None:
        self._stack: list[Any] = []

    def __enter__(self) -> _Servers:
        return self

    def start(self, settings: Settings, **uvicorn_options: Any) -> Server:
        context = running(settings, **uvicorn_options)
        started = context.__enter__()
        self._stack.append(context)
        return started

    def __exit__(self, *exc: object) -> None:
        while self._stack:
            self._stack.pop().__exit__(None, None, None)


# ---- helpers for the stories


async def execute(
    session: AsyncClientSession, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = await session.execute(GraphQLRequest(query, variable_values=variables))
    return result


class Subscription:
    """A subscription read in the background, so the test can act meanwhile."""

    def __init__(self, session: AsyncClientSession, query: str, variables: dict[str, Any]) -> None:
        self._received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(session, query, variables))

    async def _pump(
        self, session: AsyncClientSession, query: str, variables: dict[str, Any]
    ) -> None:
        async for result in session.subscribe(GraphQLRequest(query, variable_values=variables)):
            await self._received.put(result)

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(15):
            getter = asyncio.ensure_future(self._received.get())
            done, _ = await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                self._task.result()  # raises what ended the subscription
                raise AssertionError("the subscription ended")
            return getter.result()

    def pending(self) -> int:
        return self._received.qsize()

    async def close(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


async def wait_for_subscribers(server: Server, tenant_id: TenantId, count: int = 1) -> None:
    """Subscriptions are silent until a change: wait until the server holds them."""
    deadline = time.monotonic() + 15
    while server.subscriber_count(tenant_id) < count:
        if time.monotonic() > deadline:
            raise AssertionError("the subscription never reached the server")
        await asyncio.sleep(0.02)


async def bearer(server: Server, tenant: str = "acme") -> dict[str, str]:
    """The header of a fresh token of `tenant`."""
    token, _ = await server.token(tenant)
    return {"Authorization": f"Bearer {token}"}


async def post(
    server: Server,
    json: Any = None,
    *,
    content: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(server.graphql_url, json=json, content=content, headers=headers)
