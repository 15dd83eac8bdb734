"""Server layer: the `certgraph` command line (migrate, token create, serve)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Annotated, NoReturn, TypeVar

import typer
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from server.http.schema import export_sdl
from server.migrate import current_revisions, head_revisions, is_current, upgrade
from server.persistence.database import Database, is_sqlite
from server.persistence.tenants import TenantStore
from server.settings import Settings

app = typer.Typer(
    help="certgraph: certificate lifecycle service.", no_args_is_help=True, add_completion=False
)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")

T = TypeVar("T")

NOT_MIGRATED = "The database is not at the latest migration: run `certgraph migrate` first."


def main() -> None:
    app()


@app.command()
def migrate() -> None:
    """Upgrade the database (CERTGRAPH_DATABASE_URL) to the latest migration."""
    url = Settings().database_url
    heads = head_revisions()
    before = _run_against_database(url, current_revisions(url))
    where = _display(url)
    if before == heads:
        typer.echo(f"{where} is already at the latest migration ({_names(heads)}).")
        return
    _run_against_database(url, upgrade(url))
    typer.echo(f"Migrated {where} from {_names(before) or 'an empty schema'} to {_names(heads)}.")


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option(help="The tenant the token acts for (created if new).")],
) -> None:
    """Mint a token for a tenant; it is printed once, as the last line, and stored hashed."""
    url = Settings().database_url
    _require_migrated(url)
    try:
        token = _run_against_database(url, _create_token(url, tenant))
    except ValueError as error:
        _fail(str(error), code=2)
    typer.echo(f"Token for tenant {tenant!r} (shown only this once; send it as `Bearer <token>`):")
    typer.echo(token)


async def _create_token(url: str, tenant: str) -> str:
    db = Database(url)
    try:
        return await TenantStore(db).create_token(tenant)
    finally:
        await db.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the API over HTTP and WebSocket."""
    url = Settings().database_url
    if workers > 1 and is_sqlite(url):
        _fail(
            "--workers > 1 needs PostgreSQL: SQLite takes one writer at a time. "
            "Set CERTGRAPH_DATABASE_URL=postgresql+asyncpg://... or use --workers 1.",
            code=2,
        )
    _require_migrated(url)
    # The server runs in a fresh interpreter (same process id): what this command imported to
    # check the database (alembic, typer, rich: ~12 MiB) stays out of the serving process.
    # `server.http.serving` holds the uvicorn configuration (the tests serve with it too).
    python = sys.executable
    os.execv(
        python,
        [python, "-P", "-m", "server", f"--host={host}", f"--port={port}", f"--workers={workers}"],
    )


@app.command()
def seed(
    count: Annotated[
        int | None,
        typer.Option(min=1, help="How many certificates (random statuses); default: the demo set."),
    ] = None,
    tenant: Annotated[str, typer.Option(help="The tenant that owns them.")] = "dev",
) -> None:
    """Add certificates through the service and the simulated CA (the demo set: every status)."""
    settings = Settings()
    _require_migrated(settings.database_url)
    made = _run_against_database(settings.database_url, _seed(settings, count, tenant))
    if made == 0:
        typer.echo(f"Tenant {tenant!r} already has certificates; the demo set was not added.")
    else:
        typer.echo(f"Seeded {made} certificates for tenant {tenant!r}.")


async def _seed(settings: Settings, count: int | None, tenant: str) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from server.container import Container
    from server.seed import demo_plan, seed

    container = Container(settings, run_background=False)
    total = count if count is not None else len(demo_plan(2))
    try:
        with Progress(
            TextColumn("seeding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        ) as progress:
            task = progress.add_task("seed", total=total)
            return await seed(
                container,
                tenant_name=tenant,
                count=count,
                advance=lambda n: progress.advance(task, n),
            )
    finally:
        await container.close()


@app.command("export-schema")
def export_schema() -> None:
    """Print the GraphQL schema as SDL (sandbox included); `schema.graphql` is its output."""
    typer.echo(export_sdl(), nl=False)


def _require_migrated(url: str) -> None:
    if not _run_against_database(url, is_current(url)):
        _fail(NOT_MIGRATED, code=2)


def _run_against_database(url: str, work: Coroutine[object, object, T]) -> T:
    try:
        return asyncio.run(work)
    except (OSError, SQLAlchemyError) as error:
        _fail(f"Cannot use the database {_display(url)}: {error}", code=1)


def _fail(message: str, *, code: int) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _display(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _names(revisions: set[str]) -> str:
    return ", ".join(sorted(revisions))
