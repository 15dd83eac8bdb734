"""Each SQLite write has one deadline: writers queued behind a write lock another connection
holds fail fast with 503 and Retry-After, write nothing, and succeed once it is let go."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
from sqlalchemy import make_url

from resolvers.ids import CERTIFICATE, to_global_id
from server.http.app import create_app
from server.persistence.tenants import TenantStore
from server.settings import Settings
from tests.support import drive_named

WITHDRAW = """
mutation($id: ID!, $key: String) {
  withdrawApplication(input: {certificateId: $id, idempotencyKey: $key}) {
    __typename ... on WithdrawApplicationSuccess { certificate { status } }
  }
}
"""
WITHDRAWERS = 3


async def test_withdrawals_queued_behind_another_writer_fail_fast_and_write_nothing(
    migrated_sqlite_url: str,
) -> None:
    app = create_app(
        Settings(
            database_url=migrated_sqlite_url,
            rate_limit_per_second=0,
            write_deadline_seconds=0.5,
        )
    )
    container = app.state.container
    transport = httpx.ASGITransport(app=app)
    path = make_url(migrated_sqlite_url).database
    assert path is not None
    try:
        tenants = TenantStore(container.db)
        token = await tenants.create_token("acme")
        tenant = await tenants.tenant_for_token(token)
        assert tenant is not None
        ids = [
            await drive_named(container.service, container.sandbox, tenant.id, f"queued-{n}")
            for n in range(WITHDRAWERS)
        ]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            async def withdraw(certificate_id: str) -> httpx.Response:
                variables = {"id": to_global_id(CERTIFICATE, certificate_id), "key": certificate_id}
                return await http.post(
                    "/graphql",
                    json={"query": WITHDRAW, "variables": variables},
                    headers={"Authorization": f"Bearer {token}"},
                )

            holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                holder.execute("BEGIN IMMEDIATE")
                holder.execute("INSERT INTO simca_settings (key, value) VALUES ('holder', '1')")
                # Far past the deadline, short of SQLite's old 30 s busy wait per writer.
                queued = await asyncio.wait_for(
                    asyncio.gather(*(withdraw(i) for i in ids)), timeout=20
                )
                still_held = holder.in_transaction
                holder.execute("COMMIT")
            finally:
                holder.close()
            written_meanwhile = withdrawals_of(path, ids)
            retried = [await withdraw(i) for i in ids]
    finally:
        await container.db.dispose()

    assert still_held
    for response in queued:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()
        assert [e["extensions"]["code"] for e in response.json()["errors"]] == [
            "SERVICE_UNAVAILABLE"
        ]
    assert written_meanwhile == {i: 0 for i in ids}
    for response in retried:
        assert response.json()["data"]["withdrawApplication"] == {
            "__typename": "WithdrawApplicationSuccess",
            "certificate": {"status": "CA_VERIFYING_WITHDRAWAL"},
        }
    assert withdrawals_of(path, ids) == {i: 1 for i in ids}
    with sqlite3.connect(path) as db:
        holders = db.execute("SELECT count(*) FROM simca_settings WHERE key = 'holder'")
        assert holders.fetchone() == (1,)


def withdrawals_of(path: str, certificate_ids: list[str]) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            i: db.execute(
                "SELECT count(*) FROM withdrawals WHERE certificate_id = ?", (i,)
            ).fetchone()[0]
            for i in certificate_ids
        }
