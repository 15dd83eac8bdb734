"""Reads that scan run off the event loop, and a statement past its budget is answered as an
outage (HTTP 503, SERVICE_UNAVAILABLE, Retry-After), never as a bug; through the app, in process."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event, make_url
from starlette.applications import Starlette

from domain.model import new_id
from domain.statuses import CertificateStatus
from resolvers.ids import CERTIFICATE, to_global_id
from server.http.app import create_app
from server.migrate import upgrade
from server.persistence.tenants import TenantStore, hash_token
from server.settings import Settings
from tests.support import drive_named

CERTIFICATES = 100_000
# One in ten is EV: counting them reads every row of the tenant (no index has the type).
COUNT_EV = "{ certificates(filter: {type: [EV]}) { totalCount } }"
FIRST_TWO = "{ certificates(first: 2) { nodes { name } } }"
TOKEN = "cg_scan-test-token"


@dataclass(frozen=True)
class BigTenant:
    url: str
    token: str


@pytest.fixture(scope="module")
def big_tenant(tmp_path_factory: pytest.TempPathFactory) -> BigTenant:
    """A SQLite file with one tenant of 100,000 certificates, seeded with plain SQL."""
    path = tmp_path_factory.mktemp("big") / "certgraph.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(upgrade(url))
    tenant = new_id()
    with sqlite3.connect(path) as db:
        now = "2024-01-01 00:00:00.000000"
        db.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, 'big', ?)", (tenant, now))
        db.execute(
            "INSERT INTO api_tokens (id, tenant_id, token_hash, created_at) VALUES (?, ?, ?, ?)",
            (new_id(), tenant, hash_token(TOKEN), now),
        )
        db.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
            INSERT INTO certificates (
                id, tenant_id, name, type, domain_type, brand, domain_quota, validity_years,
                status, version, created_at, updated_at, domain, additional_domains,
                search_text, ca_cursor, pending_domains)
            SELECT printf('%032d', i), :tenant, 'cert-' || i,
                   CASE WHEN i % 10 = 0 THEN 'EV' ELSE 'DV' END, 'SINGLE', 'DigiCert', 1, 1,
                   'PENDING_APPLICATION', 1, :now, :now, NULL, '[]', 'cert-' || i, 0, '[]'
            FROM n
            """,
            {"count": CERTIFICATES, "tenant": tenant, "now": now},
        )
    return BigTenant(url, TOKEN)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield app, http
    finally:
        await app.state.container.db.dispose()


async def graphql(http: httpx.AsyncClient, token: str, query: str) -> httpx.Response:
    return await http.post(
        "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
    )


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["SERVICE_UNAVAILABLE"]
    assert "SELECT" not in response.text and "interrupted" not in response.text


@contextmanager
def timeline_of_counts(app: Starlette, timeline: list[str]) -> Iterator[None]:
    """Appends to `timeline` when a count starts and when SQLite has counted (pysqlite steps
    through an aggregate's whole input before `execute` returns)."""

    def started(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "count(" in statement:
            timeline.append("count started")

    def finished(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "count(" in statement:
            timeline.append("count finished")

    engines = app.state.container.db.statement_engines()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", started)
        event.listen(engine, "after_cursor_execute", finished)
    try:
        yield
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", started)
            event.remove(engine, "after_cursor_execute", finished)


async def test_healthz_is_answered_while_a_count_scans_a_large_tenant(
    big_tenant: BigTenant,
) -> None:
    timeline: list[str] = []
    async with serving(Settings(database_url=big_tenant.url, rate_limit_per_second=0)) as (
        app,
        http,
    ):
        with timeline_of_counts(app, timeline):
            scan = asyncio.create_task(graphql(http, big_tenant.token, COUNT_EV))
            while not scan.done():
                health = await http.get("/healthz")
                assert health.status_code == 200
                timeline.append("healthz")
                # In process, a request that waits for nothing never gives the loop back.
                await asyncio.sleep(0)
            counted = await scan

    assert counted.json() == {"data": {"certificates": {"totalCount": CERTIFICATES // 10}}}
    during = timeline[timeline.index("count started") : timeline.index("count finished")]
    # On the event loop, the count would hold up every other request until it finished.
    assert during.count("healthz") >= 2


async def test_a_count_past_its_budget_is_answered_503_and_cheap_reads_go_on(
    big_tenant: BigTenant,
) -> None:
    settings = Settings(
        database_url=big_tenant.url, rate_limit_per_second=0, statement_timeout_seconds=0.001
    )
    async with serving(settings) as (_, http):
        stopped = await graphql(http, big_tenant.token, COUNT_EV)
        page = await graphql(http, big_tenant.token, FIRST_TWO)

    assert_unavailable(stopped)
    assert page.status_code == 200
    assert len(page.json()["data"]["certificates"]["nodes"]) == 2


async def test_a_read_past_its_budget_on_postgresql_is_answered_503(pg_url: str) -> None:
    await upgrade(pg_url)
    settings = Settings(database_url=pg_url, rate_limit_per_second=0, statement_timeout_seconds=0.2)
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with serving(settings) as (app, http):
        token = await TenantStore(app.state.container.db).create_token("acme")
        # Another session's lock keeps the count waiting: only the budget ends its wait.
        holder = await asyncpg.connect(dsn)
        try:
            locked = holder.transaction()
            await locked.start()
            await holder.execute("LOCK TABLE certificates IN ACCESS EXCLUSIVE MODE")
            stopped = await graphql(http, token, COUNT_EV)
            await locked.rollback()
        finally:
            await holder.close()
        counted = await graphql(http, token, COUNT_EV)

    assert_unavailable(stopped)
    assert counted.json() == {"data": {"certificates": {"totalCount": 0}}}


SAME_ANSWERS = """
query($id: ID!) {
  certificate(id: $id) { id status events { kind toStatus } lastWithdrawal { status } }
  all: certificates(first: 20) {
    totalCount
    nodes { id name status version events { kind toStatus } lastWithdrawal { status } pem }
  }
  found: certificates(filter: {search: "SAME-2"}) { totalCount nodes { name } }
  withdrawable: certificates(filter: {withdrawable: true}) { totalCount nodes { name } }
}
"""


async def test_reads_by_key_give_the_same_answers_on_the_event_loop_and_on_reader_threads(
    migrated_sqlite_url: str,
) -> None:
    answers: dict[bool, Any] = {}
    statement_threads: dict[bool, list[str]] = {}
    for on_loop in (True, False):
        settings = Settings(
            database_url=migrated_sqlite_url,
            rate_limit_per_second=0,
            sqlite_key_reads_on_loop=on_loop,
        )
        async with serving(settings) as (app, http):
            container = app.state.container
            if on_loop:
                token = await TenantStore(container.db).create_token("acme")
                tenant = await TenantStore(container.db).tenant_for_token(token)
                assert tenant is not None
                ids = [
                    await drive_named(
                        container.service, container.sandbox, tenant.id, f"same-{n}", status
                    )
                    for n, status in enumerate(SAME_STATUSES)
                ]
            threads = statement_threads[on_loop] = []

            def note(*_: Any, threads: list[str] = threads) -> None:
                threads.append(threading.current_thread().name)

            runner_engines = container.db.statement_engines()[1:]
            for engine in runner_engines:
                event.listen(engine, "before_cursor_execute", note)
            response = await http.post(
                "/graphql",
                json={
                    "query": SAME_ANSWERS,
                    "variables": {"id": to_global_id(CERTIFICATE, ids[0])},
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            for engine in runner_engines:
                event.remove(engine, "before_cursor_execute", note)
        answers[on_loop] = response.json()

    assert "errors" not in answers[True]
    assert answers[True]["data"]["all"]["totalCount"] == len(SAME_STATUSES)
    assert answers[True] == answers[False]
    on_the_loop = {k: v.count(threading.main_thread().name) for k, v in statement_threads.items()}
    assert on_the_loop[True] > 0 and on_the_loop[False] == 0


SAME_STATUSES = [
    CertificateStatus.PENDING_DOMAIN_VERIFICATION,
    CertificateStatus.ISSUED,
    CertificateStatus.CA_VERIFYING_WITHDRAWAL,
    CertificateStatus.PENDING_APPLICATION,
]
