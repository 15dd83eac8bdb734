"""HTTP and WebSocket hygiene through a real server: media types and their status codes,
batching, CORS, WebSocket origins, the connection_init timeout and subscription caps."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import LEGACY_WS, TRANSPORT_WS, Server, ServerFactory, bearer, post

VIEWER = "{ viewer { tenant { name } } }"
CHANGES = "subscription { certificateStatusChanged { status } }"
GRAPHQL_RESPONSE = "application/graphql-response+json"


# ---- media types


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
        (f"text/html;q=0.9, {GRAPHQL_RESPONSE};q=0.8", GRAPHQL_RESPONSE),
    ],
)
async def test_the_response_media_type_follows_accept(
    server: Server, accept: str | None, expected: str
) -> None:
    headers = await bearer(server)
    if accept is not None:
        headers["Accept"] = accept
    async with httpx.AsyncClient(headers=headers) as client:
        if accept is None:
            del client.headers["accept"]
        response = await client.post(server.graphql_url, json={"query": VIEWER})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == expected
    assert response.json() == {"data": {"viewer": {"tenant": {"name": "acme"}}}}


async def test_nothing_acceptable_is_a_406(server: Server) -> None:
    headers = {**await bearer(server), "Accept": "text/plain"}
    response = await post(server, json={"query": VIEWER}, headers=headers)
    assert response.status_code == 406
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_ACCEPTABLE"


@pytest.mark.parametrize(
    ("body", "status", "has_data"),
    [
        # A request error (parse, validation, variables): 400 and no `data` at all.
        ({"query": "{ viewer {"}, 400, False),
        ({"query": "{ nope }"}, 400, False),
        ({"query": "query($n: Int!) { certificates(first: $n) { totalCount } }"}, 400, False),
        # The operation ran (a field error, even one that nulls `data`): 200.
        ({"query": "{ certificates(first: 500) { totalCount } }"}, 200, True),
        ({"query": VIEWER}, 200, True),
    ],
    ids=["syntax", "validation", "missing-variable", "field-error", "ok"],
)
async def test_graphql_response_json_follows_the_graphql_over_http_status_rules(
    server: Server, body: dict[str, Any], status: int, has_data: bool
) -> None:
    headers = {**await bearer(server), "Accept": GRAPHQL_RESPONSE}
    response = await post(server, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert ("data" in response.json()) is has_data
    # The same request as plain JSON: 200 whenever GraphQL answered.
    plain = await post(server, json=body, headers=await bearer(server))
    assert plain.status_code == 200


async def test_refusals_before_graphql_use_the_negotiated_media_type(server: Server) -> None:
    response = await post(server, json={"query": VIEWER}, headers={"Accept": GRAPHQL_RESPONSE})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/graphql",
        "application/json; charset=latin-1",
        "application/jsonp",
        "multipart/form-data; boundary=x",
        "",
    ],
)
async def test_only_application_json_posts_are_accepted(server: Server, content_type: str) -> None:
    headers = {**await bearer(server), "Content-Type": content_type}
    response = await post(server, content=json.dumps({"query": VIEWER}), headers=headers)
    assert response.status_code == 415
    assert response.json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    ok = {**headers, "Content-Type": "Application/JSON; Charset=UTF-8"}
    accepted = await post(server, content=json.dumps({"query": VIEWER}), headers=ok)
    assert accepted.status_code == 200


async def test_a_batch_is_refused_and_none_of_it_runs(server: Server) -> None:
    create = (
        'mutation { createCertificate(input: {name: "b", type: DV, domainType: SINGLE, '
        'brand: "b", domainQuota: 1, validityYears: 1}) { __typename } }'
    )
    headers = await bearer(server)
    response = await post(server, json=[{"query": create}] * 3, headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BATCHING_NOT_SUPPORTED"
    count = await post(server, json={"query": "{ certificates { totalCount } }"}, headers=headers)
    assert count.json()["data"]["certificates"]["totalCount"] == 0


# ---- CORS


async def preflight(server: Server, origin: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.options(
            server.graphql_url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )


async def test_cors_is_off_by_default(server: Server) -> None:
    assert (
        "access-control-allow-origin"
        not in (await preflight(server, "https://console.example")).headers
    )
    response = await post(
        server,
        json={"query": VIEWER},
        headers={**await bearer(server), "Origin": "https://console.example"},
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_exactly_the_listed_origins(start_server: ServerFactory) -> None:
    server = start_server(cors_origins=("https://console.example",))
    allowed = await preflight(server, "https://console.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://console.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    refused = await preflight(server, "https://evil.example")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    response = await post(
        server,
        json={"query": VIEWER},
        headers={**await bearer(server), "Origin": "https://console.example"},
    )
    assert response.headers["access-control-allow-origin"] == "https://console.example"


# ---- WebSockets: origin, connection_init timeout, caps


@asynccontextmanager
async def socket(
    server: Server, subprotocol: str = TRANSPORT_WS, **connect: Any
) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(
        server.websocket_url, subprotocols=[websockets.Subprotocol(subprotocol)], **connect
    ) as ws:
        yield ws


async def initialised(ws: ClientConnection, token: str) -> None:
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert json.loads(await ws.recv())["type"] == "connection_ack"


@pytest.mark.parametrize(
    ("origins", "origin", "accepted"),
    [
        ((), None, True),  # not a browser
        ((), "SAME", True),  # the page the server itself serves
        ((), "https://evil.example", False),
        (("https://console.example",), "https://console.example", True),
        (("https://console.example",), "https://evil.example", False),
    ],
    ids=["no-origin", "same-origin", "foreign", "listed", "unlisted"],
)
async def test_a_websocket_origin_is_checked_against_the_cors_list(
    start_server: ServerFactory, origins: tuple[str, ...], origin: str | None, accepted: bool
) -> None:
    server = start_server(cors_origins=origins)
    headers = {}
    if origin is not None:
        headers["Origin"] = server.base_url if origin == "SAME" else origin
    if accepted:
        async with socket(server, additional_headers=headers) as ws:
            await initialised(ws, (await server.token("acme"))[0])
    else:
        with pytest.raises(InvalidStatus) as refused:
            async with socket(server, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 403


@pytest.mark.parametrize("subprotocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_socket_that_never_initialises_is_closed(
    start_server: ServerFactory, subprotocol: str
) -> None:
    server = start_server(ws_init_timeout_seconds=0.3)
    started = time.monotonic()
    async with socket(server, subprotocol) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
    assert time.monotonic() - started < 3


async def subscribe(ws: ClientConnection, operation_id: str, protocol: str) -> None:
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    # A document of its own per operation: alike ones share one run on the server
    # (server.events.multiplex), and these tests count the runs.
    query = CHANGES.replace(
        "certificateStatusChanged", f"op{operation_id}: certificateStatusChanged"
    )
    await ws.send(json.dumps({"id": operation_id, "type": kind, "payload": {"query": query}}))


async def refusal(ws: ClientConnection, operation_id: str) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
    assert message["type"] == "error" and message["id"] == operation_id, message
    payload = message["payload"]
    error: dict[str, Any] = payload[0] if isinstance(payload, list) else payload
    return error


async def wait_running(server: Server, tenant_id: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while server.subscriber_count(tenant_id) != count:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, "subscriptions did not reach the server"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_subscriptions_are_capped_per_connection(
    start_server: ServerFactory, protocol: str
) -> None:
    server = start_server(max_subscriptions_per_connection=2)
    token, tenant_id = await server.token("acme")
    async with socket(server, protocol) as ws:
        await initialised(ws, token)
        await subscribe(ws, "1", protocol)
        await subscribe(ws, "2", protocol)
        await wait_running(server, tenant_id, 2)
        await subscribe(ws, "3", protocol)
        error = await refusal(ws, "3")
        assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
        assert "2" in error["message"]
        # Completing one makes room again, on the same socket.
        await ws.send(
            json.dumps({"id": "1", "type": "complete" if protocol == TRANSPORT_WS else "stop"})
        )
        await wait_running(server, tenant_id, 1)
        await subscribe(ws, "4", protocol)
        await wait_running(server, tenant_id, 2)


async def test_subscriptions_are_capped_per_tenant_across_connections(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_subscriptions_per_connection=5, max_subscriptions_per_tenant=3)
    acme, acme_id = await server.token("acme")
    globex, globex_id = await server.token("globex")
    async with socket(server) as first, socket(server) as second, socket(server) as other:
        await initialised(first, acme)
        await initialised(second, acme)
        await initialised(other, globex)
        await subscribe(first, "a", TRANSPORT_WS)
        await subscribe(first, "b", TRANSPORT_WS)
        await subscribe(second, "c", TRANSPORT_WS)
        await wait_running(server, acme_id, 3)
        await subscribe(second, "d", TRANSPORT_WS)
        error = await refusal(second, "d")
        assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
        # Another tenant is not held back by acme's subscriptions.
        await subscribe(other, "e", TRANSPORT_WS)
        await wait_running(server, globex_id, 1)
    # Closed sockets give their places back: acme may run three again.
    await wait_running(server, acme_id, 0)
    async with socket(server) as again:
        await initialised(again, acme)
        for operation_id in ("x", "y", "z"):
            await subscribe(again, operation_id, TRANSPORT_WS)
        await wait_running(server, acme_id, 3)
