"""The document limit through a real server, at its default: a document of one long comment
just over it is refused before it is parsed, over POST, GET and both WebSocket protocols (the
socket stays open and usable); one at the limit runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from server.settings import Settings
from tests.e2e.conftest import LEGACY_WS, TRANSPORT_WS, Server, bearer, wait_for_subscribers
from tests.e2e.test_http_hygiene import initialised, socket
from tests.parses import record_parses

LIMIT = Settings().max_document_bytes
VIEWER = "{ viewer { tenant { name } } }"
# The legacy protocol runs subscriptions only.
CHANGES = "subscription { certificateStatusChanged { status } }"
ACME = {"viewer": {"tenant": {"name": "acme"}}}
GRAPHQL_RESPONSE = "application/graphql-response+json"


def commented(size: int, query: str = VIEWER) -> str:
    """`query` and one comment, `size` bytes in all: a handful of tokens, all lexed."""
    return query + "\n#" + "x" * (size - len(query) - 2)


async def over_http(server: Server, method: str, query: str, accept: str) -> httpx.Response:
    headers = {**await bearer(server), "Accept": accept}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        if method == "GET":
            return await client.get(server.graphql_url, params={"query": query})
        return await client.post(server.graphql_url, json={"query": query})


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("accept", ["application/json", GRAPHQL_RESPONSE])
async def test_over_http_a_document_over_the_limit_is_refused_unparsed(
    server: Server, monkeypatch: pytest.MonkeyPatch, method: str, accept: str
) -> None:
    parses = record_parses(monkeypatch)

    refused = await over_http(server, method, commented(LIMIT + 1), accept)

    assert refused.status_code == 413
    assert refused.headers["content-type"].startswith(accept)
    assert refused.json() == {
        "errors": [
            {
                "message": f"The GraphQL document exceeds {LIMIT} bytes (UTF-8).",
                "extensions": {"code": "DOCUMENT_TOO_LARGE"},
            }
        ]
    }
    assert parses == []
    at_limit = await over_http(server, method, commented(LIMIT), accept)
    assert (at_limit.status_code, at_limit.json()) == (200, {"data": ACME})
    assert parses == [commented(LIMIT)]


async def start(ws: ClientConnection, protocol: str, query: str) -> str:
    operation_id = uuid.uuid4().hex
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    await ws.send(json.dumps({"id": operation_id, "type": kind, "payload": {"query": query}}))
    return operation_id


async def first_about(ws: ClientConnection, operation_id: str) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        if message.get("id") == operation_id:
            return message
        assert message["type"] == "ka", message  # the legacy protocol's keep-alive


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_over_a_websocket_a_document_over_the_limit_gets_an_error_and_the_socket_stays(
    server: Server, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    token, tenant_id = await server.token("acme")
    async with socket(server, protocol) as ws:
        await initialised(ws, token)
        parses = record_parses(monkeypatch)

        refused_id = await start(ws, protocol, commented(LIMIT + 1, CHANGES))

        refused = await first_about(ws, refused_id)
        assert refused["type"] == "error"
        payload = refused["payload"]
        error = payload[0] if protocol == TRANSPORT_WS else payload
        assert error["extensions"] == {"code": "DOCUMENT_TOO_LARGE"}
        assert str(LIMIT) in error["message"]
        assert parses == []
        # The same socket takes the next operation, one at the limit.
        await start(ws, protocol, commented(LIMIT, CHANGES))
        await wait_for_subscribers(server, tenant_id)
        assert commented(LIMIT, CHANGES) in parses
