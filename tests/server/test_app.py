"""The ASGI app's open endpoints: health, readiness and metrics, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from server.http.app import create_app
from server.settings import Settings


@pytest.fixture
async def app(db_url: str) -> AsyncIterator[Starlette]:
    app = create_app(Settings(database_url=db_url))
    yield app
    await app.state.container.db.dispose()


def client(app: Starlette) -> httpx.AsyncClient:
    # No lifespan: the open endpoints must not depend on the background workers.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_healthz_is_ok(app: Starlette) -> None:
    async with client(app) as http:
        response = await http.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_ready_when_the_database_answers(app: Starlette) -> None:
    async with client(app) as http:
        response = await http.get("/readyz")

    assert (response.status_code, response.json()) == (200, {"status": "ready"})


async def test_readyz_is_unavailable_without_saying_why_when_the_database_is_gone(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-directory" / "certgraph.db"
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{missing}"))
    try:
        async with client(app) as http:
            response = await http.get("/readyz")
    finally:
        await app.state.container.db.dispose()

    assert (response.status_code, response.json()) == (503, {"status": "unavailable"})


async def test_metrics_count_requests_by_route_template_and_status(app: Starlette) -> None:
    async with client(app) as http:
        await http.get("/healthz")
        await http.get("/healthz")
        await http.get("/no/such/path")
        response = await http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'certgraph_http_requests_total{method="GET",route="/healthz",status="200"} 2.0' in text
    assert (
        'certgraph_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text
    )
    assert "/no/such/path" not in text
    assert 'certgraph_http_request_duration_seconds_count{method="GET",route="/healthz"' in text


async def test_each_app_keeps_its_own_metrics(app: Starlette, db_url: str) -> None:
    other = create_app(Settings(database_url=db_url))
    try:
        async with client(app) as http:
            await http.get("/healthz")
        async with client(other) as http:
            response = await http.get("/metrics")
    finally:
        await other.state.container.db.dispose()

    assert 'route="/healthz"' not in response.text


async def test_a_client_that_leaves_mid_body_is_neither_answered_nor_logged_as_a_fault(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(database_url=db_url, auth="off"))
    incoming = [
        {"type": "http.request", "body": b'{"query": "{ viewer', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return incoming.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    try:
        await app(scope, receive, send)
    finally:
        await app.state.container.db.dispose()

    assert not [m for m in sent if m.get("status") == 500]
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
