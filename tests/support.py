"""Test helpers: waiting on a condition with a deadline, running the `certgraph` CLI, stopping
a child process, counting the SQL statements a database runs, making a named certificate in a
given status, running alembic, and reading rows back in plain SQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Connection, event, text

from domain.model import CertificateId, TenantId
from domain.sandbox import Sandbox
from domain.service import CertificateService
from domain.statuses import CertificateStatus
from server.migrate import alembic_config
from server.persistence.database import Database
from server.seed import drive_to

CERTGRAPH = str(Path(sys.executable).parent / "certgraph")


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 30.0, interval: float = 0.05, what: str
) -> None:
    """Poll `condition` until it holds; fail the test once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment for a CLI run: this one, minus any stray CERTGRAPH_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CERTGRAPH_")}
    env["CERTGRAPH_DATABASE_URL"] = database_url
    env.update({f"CERTGRAPH_{key.upper()}": value for key, value in settings.items()})
    return env


def run_cli(
    *args: str, database_url: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CERTGRAPH, *args],
        env=cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop_process(
    process: subprocess.Popen[Any], sig: int = signal.SIGTERM, *, timeout: float = 20.0
) -> None:
    """Ask a child process to stop with `sig` (servers shut down cleanly on SIGTERM and SIGINT),
    then wait for it as `reap` does."""
    if process.poll() is None:
        process.send_signal(sig)
    reap(process, timeout=timeout)


def reap(process: subprocess.Popen[Any], *, timeout: float = 20.0) -> None:
    """Wait for a child process told to stop; kill it if it has not within `timeout` seconds,
    so that a test never leaves one behind."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextmanager
def counting_statements(db: Database) -> Iterator[list[str]]:
    """Every statement `db` runs meanwhile, its SQLite runner's included."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engines = db.statement_engines()
    for sync_engine in engines:
        event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for sync_engine in engines:
            event.remove(sync_engine, "before_cursor_execute", record)


async def drive_named(
    service: CertificateService,
    sandbox: Sandbox,
    tenant: TenantId,
    name: str,
    status: CertificateStatus = CertificateStatus.PENDING_DOMAIN_VERIFICATION,
    *,
    present: CertificateService | None = None,
) -> CertificateId:
    """A certificate called `name` for `name`.example.com, taken to `status` (by default the
    state in which it has a CA order and can be withdrawn) as `server.seed.drive_to` does."""
    return await drive_to(
        service, sandbox, tenant, status, name=name, domain=f"{name}.example.com", present=present
    )


async def alembic(url: str, action: str, target: str) -> None:
    """`alembic upgrade|downgrade target` on the database at `url`, as the CLI would run it."""

    def run(connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        getattr(command, action)(config, target)

    db = Database(url)
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await db.dispose()


async def sql_rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of one plain-SQL query, for checking what a test left in the database."""
    async with db.engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(text(sql), params)]


async def sql_scalar(db: Database, sql: str, **params: Any) -> Any:
    """The first column of the first row of one plain-SQL query (None when there is none)."""
    async with db.engine.connect() as connection:
        return await connection.scalar(text(sql), params)
