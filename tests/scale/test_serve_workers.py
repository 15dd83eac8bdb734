"""`certgraph serve --workers N` on PostgreSQL: N processes behind one port, as one service."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from server.events.pg_broker import LISTENER_NAME
from server.migrate import upgrade
from tests.scale.conftest import WITHDRAW, Cluster, eventually, subscribed
from tests.support import free_port, run_cli

pytestmark = pytest.mark.slow


def test_serve_refuses_an_unmigrated_postgresql_database(pg_url: str) -> None:
    result = run_cli("serve", "--port", str(free_port()), "--workers", "2", database_url=pg_url)
    assert result.returncode != 0
    assert "certgraph migrate" in result.stderr


async def test_serve_with_two_workers_serves_every_subscriber_every_change(
    pg_url: str, tmp_path: Path
) -> None:
    await upgrade(pg_url)
    cluster = await Cluster.connect(pg_url, tmp_path)
    certificates = await cluster.seed_pending(6)
    served = cluster.spawn("workers", {}, "--workers", "2")
    try:

        async def both_listening() -> bool:
            assert served.alive(), served.output()
            async with cluster.engine.connect() as connection:
                listeners = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = :name AND datname = current_database()"
                    ),
                    {"name": LISTENER_NAME},
                )
            return listeners == 2

        # Two processes, each with its own listening connection.
        await eventually(both_listening, within=60, what="two workers listening")

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    response = await client.get(f"{served.base_url}/readyz")
            except httpx.TransportError:
                return False
            return response.status_code == 200

        await eventually(ready, within=30, what="the server to answer")
        async with subscribed(served) as subscriber:
            # A connection each: the kernel spreads them over both workers.
            for certificate in certificates:
                async with httpx.AsyncClient(timeout=30) as client:
                    result = await served.graphql(client, WITHDRAW, id=certificate)
                assert result["withdrawApplication"]["__typename"] == "WithdrawApplicationSuccess"
            received = await subscriber.until(
                lambda r: len(r) >= len(certificates), within=20, what="every withdrawal"
            )
        assert sorted(c["certificate"]["id"] for c in received) == sorted(certificates)
        assert {c["status"] for c in received} == {"CA_VERIFYING_WITHDRAWAL"}
    finally:
        cluster.stop()
        await cluster.db.dispose()
