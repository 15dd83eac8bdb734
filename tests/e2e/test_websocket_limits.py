"""WebSocket limits through a real server: the message size (the body limit's), the documents
the caches keep, and the caps on open connections per tenant and per process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from graphql_engine.document_cache import MAX_ENTRY_BYTES, MAX_TOTAL_BYTES, SHARED
from server.events.multiplex import LIVE_CHECKS
from tests.e2e.conftest import LEGACY_WS, TRANSPORT_WS, Server, ServerFactory
from tests.e2e.test_http_hygiene import initialised, socket

VIEWER = "{ viewer { tenant { name } } }"
ACME = {"viewer": {"tenant": {"name": "acme"}}}


def padded(query: str, size: int) -> str:
    """`query` grown to `size` bytes with a comment: a large document of a few tokens."""
    return query + "\n#" + "x" * (size - len(query) - 2)


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout=10)
    frame = closed.value.rcvd
    assert frame is not None, "the server closed without a close frame"
    return frame.code, frame.reason


async def ask(ws: ClientConnection, query: str) -> dict[str, Any]:
    """Run a query over an initialised graphql-transport-ws socket; its one result."""
    operation_id = uuid.uuid4().hex
    message = {"id": operation_id, "type": "subscribe", "payload": {"query": query}}
    await ws.send(json.dumps(message))
    while True:
        received = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        if received.get("id") == operation_id and received["type"] == "next":
            result: dict[str, Any] = received["payload"]
            return result
        # What is left of an earlier operation (its `complete`).
        assert received["type"] == "complete", received


async def still_serves(server: Server) -> None:
    token, _ = await server.token("acme")
    async with socket(server) as ws:
        await initialised(ws, token)
        assert await ask(ws, VIEWER) == {"data": ACME}
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{server.base_url}/healthz")).status_code == 200


# ---- message size


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_message_over_the_body_limit_closes_the_socket_with_1009(
    start_server: ServerFactory, protocol: str
) -> None:
    server = start_server(max_body_bytes=64 * 1024)
    token, _ = await server.token("acme")
    async with socket(server, protocol, max_size=None) as ws:
        await initialised(ws, token)
        kind = "subscribe" if protocol == TRANSPORT_WS else "start"
        message = {"id": "1", "type": kind, "payload": {"query": padded(VIEWER, 100 * 1024)}}
        await ws.send(json.dumps(message))
        code, _ = await closed_with(ws)

    assert code == 1009
    await still_serves(server)


async def test_the_app_closes_with_1009_under_a_server_that_lets_big_messages_through(
    start_server: ServerFactory,
) -> None:
    # uvicorn refuses first under `certgraph serve`; another ASGI server may not.
    server = start_server(max_body_bytes=64 * 1024, serving={"ws_max_size": 16 * 1024 * 1024})
    token, _ = await server.token("acme")
    async with socket(server, max_size=None) as ws:
        await initialised(ws, token)
        query = padded(VIEWER, 64 * 1024 + 1)
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        code, reason = await closed_with(ws)

    assert (code, reason) == (1009, "Messages are limited to 65536 bytes")
    await still_serves(server)


async def test_a_large_document_under_the_limit_is_answered_but_not_cached(
    server: Server,
) -> None:
    token, _ = await server.token("acme")
    # Over the caches' entry bound, under the document limit.
    large = padded(VIEWER, MAX_ENTRY_BYTES + 1024)
    async with socket(server) as ws:
        await initialised(ws, token)
        assert await ask(ws, large) == {"data": ACME}
        assert await ask(ws, VIEWER) == {"data": ACME}

    caches = (SHARED.parsed, SHARED.validated, LIVE_CHECKS)

    def cached(source: str) -> list[bool]:
        return [any(isinstance(key, tuple) and source in key for key in c) for c in caches]

    assert cached(large) == [False, False, False]
    assert cached(VIEWER) == [True, True, True]
    for cache in caches:
        assert cache.total_bytes <= cache.max_total_bytes <= MAX_TOTAL_BYTES
    assert len(large) > MAX_ENTRY_BYTES


# ---- open connections


async def test_a_tenant_past_its_connection_cap_is_refused_with_4429(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_ws_connections_per_tenant=2)
    acme, _ = await server.token("acme")
    globex, _ = await server.token("globex")
    async with socket(server) as first, socket(server) as second:
        await initialised(first, acme)
        await initialised(second, acme)
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            async with socket(server, protocol) as third:
                await third.send(
                    json.dumps(
                        {"type": "connection_init", "payload": {"Authorization": f"Bearer {acme}"}}
                    )
                )
                code, reason = await closed_with(third)
            assert code == 4429
            assert "2" in reason
        # Another tenant is not held back by acme's sockets.
        async with socket(server) as other:
            await initialised(other, globex)
            assert (await ask(other, VIEWER))["data"]["viewer"]["tenant"]["name"] == "globex"
        # The sockets already open keep working.
        assert await ask(first, VIEWER) == {"data": ACME}
    # Closed sockets give their places back.
    await eventually_initialises(server, acme)


async def test_the_process_cap_counts_sockets_before_they_initialise(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_ws_connections=2)
    token, _ = await server.token("acme")
    async with socket(server), socket(server):
        with pytest.raises(InvalidStatus) as refused:
            async with socket(server):
                pass
        response = refused.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert json.loads(response.body)["errors"][0]["extensions"]["code"] == (
            "TOO_MANY_CONNECTIONS"
        )
    await eventually_initialises(server, token)


async def test_a_socket_that_never_initialises_gives_its_place_back_at_the_timeout(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_ws_connections=1, ws_init_timeout_seconds=0.5)
    token, _ = await server.token("acme")
    async with socket(server) as idle:
        code, _ = await closed_with(idle)
        assert code == 4408
        await eventually_initialises(server, token)


async def eventually_initialises(server: Server, token: str) -> None:
    """A socket of `token` is accepted and initialised once the server has counted the
    sockets closed meanwhile (their ends reach it shortly after the client's)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            async with socket(server) as ws:
                await initialised(ws, token)
                assert await ask(ws, VIEWER) == {"data": ACME}
                return
        except (InvalidStatus, ConnectionClosed):
            assert time.monotonic() < deadline, "the server never gave the places back"
            await asyncio.sleep(0.05)
