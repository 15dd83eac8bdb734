"""Rate limiting through a real server: a token bucket per tenant, 429 with Retry-After."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from server.http.rate_limit import TokenBuckets
from tests.e2e.conftest import TRANSPORT_WS, ServerFactory

VIEWER = {"query": "{ viewer { tenant { name } } }"}


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == 0.5  # one token comes back every half second
    now[0] += 0.5
    assert buckets.take("a") == 0
    assert buckets.take("b") == 0  # another key has its own bucket
    now[0] += 60
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 0.5]  # refilled to the burst only


def test_a_bucket_of_rate_zero_never_limits() -> None:
    buckets = TokenBuckets(rate=0, burst=1)
    assert all(buckets.take("a") == 0 for _ in range(1_000))


def test_idle_buckets_are_forgotten_rather_than_grow_without_bound() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1, burst=1, clock=lambda: now[0])
    for i in range(TokenBuckets.MAX_KEYS + 50):
        buckets.take(f"client-{i}")
        now[0] += 0.001
    assert len(buckets._buckets) <= TokenBuckets.MAX_KEYS


async def test_one_tenant_over_its_rate_gets_429_while_others_go_on(
    start_server: ServerFactory,
) -> None:
    # One token per 10 s: the flood below cannot earn a sixth while it lasts.
    server = start_server(rate_limit_per_second=0.1, rate_limit_burst=5)
    acme, _ = await server.token("acme")
    globex, _ = await server.token("globex")
    async with httpx.AsyncClient() as client:

        async def post(token: str) -> httpx.Response:
            return await client.post(
                server.graphql_url, json=VIEWER, headers={"Authorization": f"Bearer {token}"}
            )

        flood = await asyncio.gather(*(post(acme) for _ in range(20)))
        statuses = [r.status_code for r in flood]
        assert statuses.count(200) == 5 and statuses.count(429) == 15, statuses
        limited = next(r for r in flood if r.status_code == 429)
        assert 1 <= int(limited.headers["retry-after"]) <= 10
        [error] = limited.json()["errors"]
        assert error["extensions"] == {"code": "RATE_LIMITED"}
        # globex is not starved by acme's flood.
        assert [(await post(globex)).status_code for _ in range(5)] == [200] * 5
        # Health, readiness and metrics are never limited.
        for path in ("/healthz", "/readyz", "/metrics") * 10:
            assert (await client.get(server.base_url + path)).status_code == 200


async def test_guessing_tokens_is_limited_per_client_address(start_server: ServerFactory) -> None:
    server = start_server(rate_limit_per_second=0.1, rate_limit_burst=3)
    async with httpx.AsyncClient() as client:
        statuses = [
            (
                await client.post(
                    server.graphql_url, json=VIEWER, headers={"Authorization": f"Bearer cg_{i}"}
                )
            ).status_code
            for i in range(6)
        ]
    assert statuses == [401, 401, 401, 429, 429, 429]


async def test_websocket_operations_share_the_tenants_bucket(start_server: ServerFactory) -> None:
    server = start_server(rate_limit_per_second=0.1, rate_limit_burst=2)
    token, _ = await server.token("acme")
    async with websockets.connect(
        server.websocket_url, subprotocols=[websockets.Subprotocol(TRANSPORT_WS)]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        answers = []
        for operation_id in ("1", "2", "3"):
            await ws.send(json.dumps({"id": operation_id, "type": "subscribe", "payload": VIEWER}))
            message = json.loads(await ws.recv())
            if message["type"] == "next":
                assert json.loads(await ws.recv())["type"] == "complete"
            answers.append(message)
    assert [m["type"] for m in answers] == ["next", "next", "error"]
    assert answers[2]["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert answers[2]["payload"][0]["extensions"]["retryAfterSeconds"] >= 1
