"""Tokens and tenants through a real server: HTTP 401, WebSocket 4401/4403, isolation."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets
from gql.transport.exceptions import TransportQueryError
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import (
    LEGACY_WS,
    TRANSPORT_WS,
    Server,
    ServerFactory,
    Subscription,
    execute,
    wait_for_subscribers,
)

VIEWER = "{ viewer { tenant { name } } }"
CREATE = """
mutation($name: String!) {
  createCertificate(input: {name: $name, type: DV, domainType: SINGLE, brand: "DigiCert",
                            domainQuota: 1, validityYears: 1}) {
    ... on CreateCertificateSuccess { certificate { id } }
  }
}
"""
DELETE = """
mutation($id: ID!) {
  deleteCertificate(input: {certificateId: $id}) {
    __typename ... on CertificateNotFoundError { certificateId }
  }
}
"""
CHANGES = """
subscription { certificateStatusChanged { status certificate { id name } } }
"""


def post(server: Server, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.graphql_url, json=body, headers=headers or {}, timeout=30)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer cg_unknown", "Basic YWxhZGRpbjpvcGVu", "Bearer", "cg_x"]
)
def test_graphql_without_a_valid_token_is_401(server: Server, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = post(server, {"query": VIEWER}, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert "Bearer" in error["message"]


async def test_the_gql_client_is_told_to_authenticate(server: Server) -> None:
    with pytest.raises(TransportQueryError) as raised:
        async with server.http(None) as http:
            await execute(http, VIEWER)
    assert raised.value.errors is not None
    assert raised.value.errors[0]["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_the_token_names_the_tenant(server: Server) -> None:
    token, _ = await server.token("acme")
    async with server.http(token) as http:
        assert await execute(http, VIEWER) == {"viewer": {"tenant": {"name": "acme"}}}


async def test_tenants_with_two_tokens_see_only_their_own(server: Server) -> None:
    acme_token, _ = await server.token("acme")
    globex_token, globex_id = await server.token("globex")
    async with (
        server.http(acme_token) as acme,
        server.http(globex_token) as globex,
        server.websocket(globex_token) as globex_ws,
    ):
        mine = (await execute(acme, CREATE, {"name": "acme-web"}))["createCertificate"]
        acme_certificate = mine["certificate"]["id"]
        listed = await execute(globex, "{ certificates { totalCount nodes { id } } }")
        assert listed == {"certificates": {"totalCount": 0, "nodes": []}}
        looked_up = await execute(
            globex, "query($id: ID!) { certificate(id: $id) { id } }", {"id": acme_certificate}
        )
        assert looked_up == {"certificate": None}
        refused = await execute(globex, DELETE, {"id": acme_certificate})
        assert refused["deleteCertificate"] == {
            "__typename": "CertificateNotFoundError",
            "certificateId": acme_certificate,
        }

        subscription = Subscription(globex_ws, CHANGES, {})
        try:
            await wait_for_subscribers(server, globex_id)
            deleted = await execute(acme, DELETE, {"id": acme_certificate})
            assert deleted["deleteCertificate"]["__typename"] == "CertificateChangeSuccess"
            own = (await execute(globex, CREATE, {"name": "globex-web"}))["createCertificate"]
            # The first change globex hears is its own: acme's deletion never reached it.
            heard = (await subscription.next())["certificateStatusChanged"]
            assert heard["certificate"] == {"id": own["certificate"]["id"], "name": "globex-web"}
        finally:
            await subscription.close()


# ---- WebSocket authentication


async def close_code(
    server: Server, subprotocol: str, payload: dict[str, Any], **connect: Any
) -> int:
    async with websockets.connect(
        server.websocket_url, subprotocols=[websockets.Subprotocol(subprotocol)], **connect
    ) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            while True:
                message = json.loads(await socket.recv())
                if message["type"] == "connection_ack":
                    return 0
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code


@pytest.mark.parametrize("subprotocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_websocket_without_a_token_is_closed_with_4401(
    server: Server, subprotocol: str
) -> None:
    assert await close_code(server, subprotocol, {}) == 4401


@pytest.mark.parametrize("subprotocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_websocket_with_an_unknown_token_is_closed_with_4403(
    server: Server, subprotocol: str
) -> None:
    assert await close_code(server, subprotocol, {"Authorization": "Bearer cg_nope"}) == 4403


async def test_a_websocket_may_carry_the_token_in_the_upgrade_request(server: Server) -> None:
    token, _ = await server.token("acme")
    code = await close_code(
        server, TRANSPORT_WS, {}, additional_headers={"Authorization": f"Bearer {token}"}
    )
    assert code == 0


async def test_a_subscription_before_connection_init_is_refused(server: Server) -> None:
    async with websockets.connect(
        server.websocket_url, subprotocols=[websockets.Subprotocol(TRANSPORT_WS)]
    ) as socket:
        await socket.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": CHANGES}})
        )
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


# ---- CERTGRAPH_AUTH=off


async def test_with_auth_off_everyone_is_tenant_dev(start_server: ServerFactory) -> None:
    server = start_server(auth="off")
    response = post(server, {"query": VIEWER})
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"tenant": {"name": "dev"}}}}
    async with server.websocket(None) as ws:
        assert await execute(ws, VIEWER) == {"viewer": {"tenant": {"name": "dev"}}}
