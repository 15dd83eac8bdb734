"""Benchmark databases: the tenants, their certificates, tokens, and what the scenarios need.

Tenants:
- `bench-1` .. `bench-N`: `--certs` certificates split between them, every status
  (`bench-1` serves the list and polling scenarios);
- `bench-deep`: `--deep-certs` certificates, for page 1 against page 1,000;
- `bench-withdraw`: `--withdraw-pool` certificates whose application can be withdrawn, each
  withdrawn at most once by the withdrawal and subscription scenarios.

A seeded SQLite database is kept under `bench/results/data/`, keyed by the plan and the schema
revision, and copied for each run (the scenarios change it). PostgreSQL gets a database of its
own, created and dropped by the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, select, text

from bench import dataset
from domain.reading import Position, SortField
from domain.statuses import CertificateStatus
from resolvers.connection import encode_cursor
from resolvers.ids import CERTIFICATE, to_global_id
from server.migrate import head_revisions, upgrade
from server.persistence.database import Database
from server.persistence.mapping import certificates
from server.persistence.tenants import TenantStore

BATCH = 2_000
DEEP_PAGE_SIZE = 50
DEEP_PAGE = 1_000
MAIN, DEEP, WITHDRAW = "bench-{}", "bench-deep", "bench-withdraw"


@dataclass(frozen=True)
class Plan:
    certs: int = 10_000
    tenants: int = 4
    deep_certs: int = 100_000
    withdraw_pool: int = 20_000
    seed: int = 8

    def key(self) -> str:
        text_ = json.dumps([asdict(self), sorted(head_revisions()), dataset.VERSION])
        return hashlib.sha256(text_.encode()).hexdigest()[:12]


@dataclass
class Manifest:
    """What the load generators need to know about a seeded database."""

    tokens: dict[str, str] = field(default_factory=dict)
    # Global ids of `bench-1`'s certificates (status polling picks among them).
    poll_ids: list[str] = field(default_factory=list)
    # Global ids of withdrawable certificates of `bench-withdraw`, in the order to use them.
    withdrawable: list[str] = field(default_factory=list)
    # The cursor after page 999 of `bench-deep` (page size DEEP_PAGE_SIZE), if it has one.
    deep_cursor: str | None = None
    statuses: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls(**json.loads(path.read_text()))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _groups(plan: Plan, main_only: bool) -> list[tuple[str, int, tuple[CertificateStatus, ...]]]:
    everything = tuple(CertificateStatus)
    groups = []
    share, extra = divmod(plan.certs, plan.tenants)
    for n in range(plan.tenants):
        groups.append((MAIN.format(n + 1), share + (1 if n < extra else 0), everything))
    if not main_only:
        groups.append((DEEP, plan.deep_certs, everything))
        groups.append((WITHDRAW, plan.withdraw_pool, dataset.WITHDRAWABLE))
    return [g for g in groups if g[1] > 0]


async def _tenants(url: str, names: list[str], manifest: Manifest) -> dict[str, str]:
    db = Database(url)
    try:
        store = TenantStore(db)
        ids: dict[str, str] = {}
        for name in names:
            manifest.tokens[name] = await store.create_token(name)
            tenant = await store.tenant_for_token(manifest.tokens[name])
            assert tenant is not None
            ids[name] = tenant.id
        return ids
    finally:
        await db.dispose()


class _Collector:
    """Remembers, while clones stream past, the ids the scenarios need."""

    def __init__(self, manifest: Manifest, poll_tenant: str) -> None:
        self.manifest = manifest
        self.poll_tenant = poll_tenant
        self.tenant = ""

    def __call__(self, status: CertificateStatus, certificate_id: str) -> None:
        manifest = self.manifest
        manifest.statuses[status.value] = manifest.statuses.get(status.value, 0) + 1
        if self.tenant == self.poll_tenant:
            manifest.poll_ids.append(to_global_id(CERTIFICATE, certificate_id))
        elif self.tenant == WITHDRAW:
            manifest.withdrawable.append(to_global_id(CERTIFICATE, certificate_id))


async def _write(
    url: str,
    plan: Plan,
    main_only: bool,
    insert: Callable[[dataset.Batch], Any],
) -> Manifest:
    manifest = Manifest()
    groups = _groups(plan, main_only)
    tenant_ids = await _tenants(url, [name for name, _, _ in groups], manifest)
    templates = await dataset.make_templates()
    collect = _Collector(manifest, MAIN.format(1))
    now = datetime.now(UTC)
    with _progress() as progress:
        task = progress.add_task("seeding", total=sum(count for _, count, _ in groups))
        for number, (name, count, statuses) in enumerate(groups):
            collect.tenant = name
            cloner = dataset.Cloner(templates, tenant_ids[name], plan.seed + number, now)
            for batch in dataset.batches(cloner.make(count, statuses, name), BATCH, collect):
                await insert(batch)
                progress.advance(task, batch.certificates)
    if DEEP in tenant_ids:
        manifest.deep_cursor = await _deep_cursor(url, tenant_ids[DEEP])
    return manifest


async def _deep_cursor(url: str, tenant_id: str) -> str | None:
    """The cursor a client holds after reading pages 1 to 999 in the default order."""
    query = (
        select(certificates.c.created_at, certificates.c.id)
        .where(
            certificates.c.tenant_id == tenant_id,
            certificates.c.status != CertificateStatus.DELETED.value,
        )
        .order_by(certificates.c.created_at.desc(), certificates.c.id.desc())
        .offset((DEEP_PAGE - 1) * DEEP_PAGE_SIZE - 1)
        .limit(1)
    )
    db = Database(url)
    try:
        row = await db.read(lambda connection: connection.execute(query).first())
    finally:
        await db.dispose()
    if row is None:
        return None
    return encode_cursor(SortField.CREATED_AT, Position(row.created_at, row.id))


# ---- SQLite: built once per plan, copied for each run


def sqlite_database(plan: Plan, data_dir: Path, run_dir: Path, fresh: bool) -> tuple[str, Manifest]:
    """A run's own copy of the seeded SQLite database (seeding it first if not cached)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    pristine = data_dir / f"sqlite-{plan.key()}.db"
    manifest_path = pristine.with_suffix(".json")
    if fresh or not manifest_path.exists():
        # One seeded database at a time: they take hundreds of megabytes.
        for stale in data_dir.glob("sqlite-*"):
            stale.unlink()
        manifest = asyncio.run(_seed_sqlite(plan, pristine))
        manifest.save(manifest_path)
    else:
        print(f"Using the seeded database {pristine} (--reseed to make it again).")
    target = run_dir / "certgraph.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(pristine, target)
    return f"sqlite+aiosqlite:///{target}", Manifest.load(manifest_path)


def discard_copy(run_dir: Path) -> None:
    """The run's copy is hundreds of megabytes; the seeded original stays cached."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run_dir / 'certgraph.db'}{suffix}").unlink(missing_ok=True)


async def _seed_sqlite(plan: Plan, path: Path) -> Manifest:
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade(url)
    # Bulk loading through the plain sqlite3 driver: same dialect, so the same stored values.
    engine = create_sync_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _fast(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    async def insert(batch: dataset.Batch) -> None:
        with engine.begin() as connection:
            dataset.insert_batch_sync(connection, batch)

    try:
        manifest = await _write(url, plan, False, insert)
    finally:
        engine.dispose()
    # One file, no WAL beside it: the copy is the whole database.
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("ANALYZE")
    return manifest


# ---- PostgreSQL: a database of the run's own


def postgres_url(server: str, database: str) -> str:
    return f"{server.rstrip('/')}/{database}"


async def create_postgres(server: str, database: str, plan: Plan) -> tuple[str, Manifest]:
    """Create `database` afresh on the server and seed the main tenants only."""
    await drop_postgres(server, database)
    await _as_admin(server, f'CREATE DATABASE "{database}"')
    url = postgres_url(server, database)
    await upgrade(url)
    db = Database(url)

    async def insert(batch: dataset.Batch) -> None:
        async with db.engine.begin() as connection:
            await dataset.insert_batch(connection, batch)

    try:
        manifest = await _write(url, plan, True, insert)
        async with db.engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
    finally:
        await db.dispose()
    return url, manifest


async def drop_postgres(server: str, database: str) -> None:
    await _as_admin(server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def _as_admin(server: str, statement: str) -> None:
    """One statement on the server's `postgres` database, outside a transaction (as CREATE and
    DROP DATABASE must run)."""
    admin = Database(postgres_url(server, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await admin.dispose()
