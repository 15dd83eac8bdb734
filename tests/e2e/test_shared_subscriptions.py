"""Sockets that ask the same live subscription share one run on the server, and each hears
every change (the rules of sharing: tests/server/test_multiplex.py)."""

from __future__ import annotations

import asyncio
import time

from domain.model import TenantId
from server.http.graphql_ws import multiplexer
from tests.e2e.conftest import Server, Subscription, execute, wait_for_subscribers
from tests.e2e.test_withdrawal_story import CHANGES, WITHDRAW, applied


async def wait_for_sockets(tenant_id: TenantId, count: int) -> None:
    deadline = time.monotonic() + 15
    while multiplexer.sockets(tenant_id) < count:
        assert time.monotonic() < deadline, "the sockets never joined"
        await asyncio.sleep(0.02)


async def test_sockets_asking_alike_share_one_run_and_each_hears_the_change(
    server: Server,
) -> None:
    token, tenant_id = await server.token("acme")
    async with (
        server.http(token) as http,
        server.websocket(token) as first_ws,
        server.websocket(token) as second_ws,
    ):
        certificate_id = await applied(http, "shop")
        first = Subscription(first_ws, CHANGES, {"ids": [certificate_id]})
        second = Subscription(second_ws, CHANGES, {"ids": [certificate_id]})
        try:
            await wait_for_sockets(tenant_id, 2)
            await wait_for_subscribers(server, tenant_id)
            assert server.subscriber_count(tenant_id) == 1
            await execute(http, WITHDRAW, {"id": certificate_id})
            heard = [(await s.next())["certificateStatusChanged"] for s in (first, second)]
            assert heard[0] == heard[1]
            assert heard[0]["status"] == "CA_VERIFYING_WITHDRAWAL"
        finally:
            await first.close()
            await second.close()
