"""Server layer: the ASGI application, the one composition root (`create_app`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import Connection, text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

from server.container import Container
from server.heap import settled_heap
from server.http.graphql_routes import graphql_routes
from server.http.metrics import HttpMetrics, MetricsMiddleware
from server.persistence.database import Database
from server.settings import Settings

log = logging.getLogger(__name__)

# The web console: static files, served at `/` after every other route.
STATIC_DIR = Path(__file__).resolve().parent / "static"

# A readiness probe that hangs is as bad as one that fails: answer within this.
READY_TIMEOUT_SECONDS = 3.0


def create_app(settings: Settings) -> Starlette:
    container = Container(settings)
    metrics = HttpMetrics()
    container.register_metrics(metrics.registry)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await container.start()
        try:
            async with settled_heap(settings.heap_trim_seconds):
                yield
        finally:
            await container.close()

    app = Starlette(
        routes=routes(container, metrics),
        middleware=[*cors(settings), Middleware(MetricsMiddleware, metrics=metrics)],
        lifespan=lifespan,
    )
    app.state.container = container
    return app


def cors(settings: Settings) -> list[Middleware]:
    """CORS only for the listed origins; none by default (browsers then refuse cross-origin
    calls). Tokens travel in `Authorization`, never in cookies, so no credentials mode."""
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    ]


def app_from_env() -> Starlette:
    """Zero-argument factory for uvicorn (`server.http.app:app_from_env`, factory=True)."""
    return create_app(Settings())


def routes(container: Container, metrics: HttpMetrics) -> list[BaseRoute]:
    """Every route the service answers; `/healthz`, `/readyz`, `/metrics` and the console's
    static files (served at `/`, after every other route) need no token."""
    console = StaticFiles(directory=STATIC_DIR, html=True)
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readiness_probe(container.db), methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        *graphql_routes(container),
        # One route per console file rather than a mount at `/`: any other path stays
        # unmatched, a 404 counted under `<unmatched>` in the metrics.
        *(
            Route(path, console, methods=["GET", "HEAD"])
            for path in ["/", *(f"/{file.name}" for file in sorted(STATIC_DIR.iterdir()))]
        ),
    ]


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def readiness_probe(db: Database) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def readyz(request: Request) -> JSONResponse:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await db.read(_select_one)
        except Exception:
            # The reason goes to the log, never to an unauthenticated caller.
            log.warning("readiness check failed: the database is unreachable", exc_info=True)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    return readyz


def _select_one(connection: Connection) -> None:
    connection.execute(text("SELECT 1"))
