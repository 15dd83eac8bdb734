"""Benchmark data: certificates made by the real service, then cloned in bulk.

A few hundred *template* certificates are driven through the real `CertificateService` and the
simulated CA on a scratch SQLite file, one per (status, history) variant: every status, with 3
to 10 events. Each benchmark certificate is a clone of a template: the same rows in every table
that refers to it (events, withdrawals, the CA's orders and decisions) with fresh ids, its own
name and domains, and its whole timeline moved back by one offset. The history chain, the
statuses, the withdrawals and the CA's view of each order are therefore exactly as consistent
as the service made them, and a million certificates cost one bulk insert each, not a dozen
service calls.
"""

from __future__ import annotations

import random
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, select

from domain.model import CertificateId, TenantId, new_id
from domain.sandbox import Sandbox
from domain.service import CertificateService
from domain.statuses import CertificateStatus
from server.ca.orders import challenge_record
from server.ca.simulated import SimulatedCa
from server.ca.sql_book import SqlOrderBook
from server.events.broker import Broker
from server.migrate import upgrade
from server.persistence.changes import SqlChangeHistory
from server.persistence.database import Database
from server.persistence.tables import Base
from server.persistence.tenants import TenantStore
from server.persistence.unit_of_work import SqlUnitOfWorkFactory
from server.seed import BRANDS, RECIPES, create_for, sandbox_step, user_step

S = CertificateStatus
WITHDRAWABLE = (
    S.PENDING_DOMAIN_VERIFICATION,
    S.PENDING_ORGANIZATION_VERIFICATION,
    S.CA_VERIFYING_DOMAIN_ADDITION,
)
MIN_EVENTS, MAX_EVENTS = 3, 10
# Bump when the way data is made changes: cached databases are keyed on it.
VERSION = 1

_UUID = re.compile(r"[0-9a-f]{32}")
# Prefix loop: apply, withdraw, the CA approves -> PENDING_APPLICATION again (3 events).
WITHDRAWN_CYCLE = ("apply", "withdraw", "APPROVE")
# After an application: a withdrawal the CA turns down -> the review resumes (2 events).
REFUSED_WITHDRAWAL = ("withdraw", "REJECT")


class ManualClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def scripts(status: CertificateStatus) -> Iterator[tuple[str, ...]]:
    """Every step sequence the variants of `status` take (prefix loops, repeated checks)."""
    base = RECIPES[status].steps
    for cycles in range(3):
        prefix = WITHDRAWN_CYCLE * cycles
        if "apply" not in base:
            yield prefix + base
            continue
        at = base.index("apply") + 1
        for refused in range(2):
            for checks in range(3):
                extra = REFUSED_WITHDRAWAL * refused + ("verify",) * checks
                yield prefix + base[:at] + extra + base[at:]


@dataclass
class Template:
    """One driven certificate: its rows in every table, and what a clone must rewrite."""

    status: CertificateStatus
    rows: dict[str, list[dict[str, Any]]]
    tenant_id: str
    name: str
    domain: str
    ids: list[str] = field(default_factory=list)
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        found: set[str] = set()
        for table_rows in self.rows.values():
            for row in table_rows:
                for value in row.values():
                    _collect_ids(value, found)
        found.discard(self.tenant_id)
        self.ids = sorted(found)
        tokens = [self.tenant_id, self.name, self.domain, *self.ids]
        self.pattern = re.compile("|".join(re.escape(t) for t in tokens))


def _collect_ids(value: Any, into: set[str]) -> None:
    if isinstance(value, str):
        into.update(_UUID.findall(value))
    elif isinstance(value, list):
        for item in value:
            _collect_ids(item, into)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_ids(item, into)


# ---- templates: driven through the real service on a scratch database


class _Driver:
    def __init__(self, db: Database, tenant_id: TenantId, clock: ManualClock) -> None:
        self.clock = clock
        self.ca = SimulatedCa(SqlOrderBook(db), clock.now)
        self.uow = SqlUnitOfWorkFactory(db, clock.now)
        self.service = CertificateService(self.uow, self.ca, clock, Broker(SqlChangeHistory(db)))
        self.sandbox = Sandbox(self.uow, self.ca)
        self.tenant_id = tenant_id

    def tick(self, rng: random.Random) -> None:
        self.clock.at += timedelta(minutes=rng.randint(20, 600), microseconds=rng.randint(0, 999))

    async def drive(
        self, status: CertificateStatus, steps: Sequence[str], name: str, domain: str, brand: str
    ) -> str:
        recipe = RECIPES[status]
        service, tenant = self.service, self.tenant_id
        certificate_id = await create_for(service, tenant, recipe, name=name, brand=brand)
        rng = random.Random(name)
        for step in steps:
            self.tick(rng)
            if await user_step(service, tenant, certificate_id, recipe, step, domain):
                continue
            if step == "expire":
                await self._expire(certificate_id)
            else:
                await sandbox_step(service, self.sandbox, tenant, certificate_id, step)
        return certificate_id

    async def _expire(self, certificate_id: CertificateId) -> None:
        """Move the clock past the certificate's expiry and let the service find it expired."""
        async with self.uow() as uow:
            certificate = await uow.certificates.get(self.tenant_id, certificate_id)
        assert certificate is not None and certificate.expires_at is not None
        self.clock.at = certificate.expires_at + timedelta(days=3)
        changed = await self.service.expire([certificate.id])
        assert changed == 1, f"{certificate_id} did not expire"


async def make_templates(
    statuses: Sequence[CertificateStatus] = tuple(CertificateStatus),
) -> list[Template]:
    """Drive every variant of every status through the service; read back all their rows."""
    with tempfile.TemporaryDirectory(prefix="certgraph-templates-") as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'templates.db'}"
        await upgrade(url)
        db = Database(url)
        try:
            tenant = await TenantStore(db).ensure_tenant("templates")
            now = datetime.now(UTC)
            made: list[tuple[CertificateStatus, str, str, str]] = []
            number = 0
            for status in statuses:
                for steps in scripts(status):
                    number += 1
                    name, domain = f"tplname{number:04d}x", f"tpl{number:04d}x.example.net"
                    # EXPIRED needs an issue more than a year back; the others stay recent so
                    # no ISSUED clone falls due for expiry while the benchmark runs.
                    start = now - timedelta(days=900 if status is S.EXPIRED else 60)
                    driver = _Driver(db, tenant.id, ManualClock(start))
                    certificate_id = await driver.drive(
                        status, steps, name, domain, BRANDS[number % len(BRANDS)]
                    )
                    made.append((status, certificate_id, name, domain))
            templates = []
            async with db.engine.connect() as connection:
                for status, certificate_id, name, domain in made:
                    rows = await _rows_of(connection, certificate_id)
                    events = len(rows["certificate_events"])
                    current = rows["certificates"][0]["status"]
                    assert current == status.value, (name, current, status)
                    if MIN_EVENTS <= events <= MAX_EVENTS:
                        templates.append(Template(status, rows, tenant.id, name, domain))
        finally:
            await db.dispose()
    missing = set(statuses) - {t.status for t in templates}
    assert not missing, f"no template with {MIN_EVENTS}-{MAX_EVENTS} events for {missing}"
    return templates


def _linked_tables() -> list[tuple[Table, str]]:
    """Every table holding rows of one certificate, and the column that links them."""
    linked = []
    for table in Base.metadata.sorted_tables:
        if table.name == "certificates":
            linked.append((table, "id"))
        elif table.name == "simca_orders":
            linked.append((table, "reference"))
        elif "certificate_id" in table.c:
            linked.append((table, "certificate_id"))
        elif "order_id" in table.c:
            linked.append((table, "order_id"))
    return linked


async def _rows_of(connection: Any, certificate_id: str) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    order_ids: list[str] = []
    for table, link in _linked_tables():
        column = table.c[link]
        if link == "reference":
            condition = column.startswith(f"{certificate_id}:")
        elif link == "order_id":
            condition = column.in_(order_ids)
        else:
            condition = column == certificate_id
        found = [
            dict(r) for r in (await connection.execute(select(table).where(condition))).mappings()
        ]
        if table.name == "simca_orders":
            order_ids = [r["id"] for r in found]
        if table.name == "change_feed":
            # The feed numbers each clone's changes afresh, in the order they are inserted.
            for row in found:
                del row["sequence"]
        rows[table.name] = found
    return rows


# ---- clones


class Cloner:
    """Makes clones of templates for one tenant: fresh ids, names, domains and times."""

    def __init__(self, templates: Sequence[Template], tenant_id: str, seed: int, now: datetime):
        self.by_status: dict[CertificateStatus, list[Template]] = {}
        for template in templates:
            self.by_status.setdefault(template.status, []).append(template)
        self.tenant_id = tenant_id
        self.rng = random.Random(seed)
        self.now = now

    def clone(
        self, template: Template, name: str, domain: str
    ) -> tuple[str, dict[str, list[dict[str, Any]]]]:
        mapping = {template.tenant_id: self.tenant_id, template.name: name, template.domain: domain}
        for old in template.ids:
            mapping[old] = new_id()
        pattern = template.pattern

        def swap(value: Any) -> Any:
            if isinstance(value, str):
                return pattern.sub(lambda m: mapping[m.group(0)], value)
            if isinstance(value, list):
                return [swap(v) for v in value]
            if isinstance(value, dict):
                return {k: swap(v) for k, v in value.items()}
            if isinstance(value, datetime):
                return value - shift
            return value

        # Back by up to 200 days: never in the future, and ISSUED clones stay unexpired.
        shift = timedelta(seconds=self.rng.uniform(0, 200 * 86400))
        out = {
            table: [{k: swap(v) for k, v in row.items()} for row in rows]
            for table, rows in template.rows.items()
        }
        references = {o["id"]: o["reference"] for o in out.get("simca_orders", ())}
        for certificate in out["certificates"]:
            _fix_records(
                certificate, "validation_records", references.get(certificate["ca_order_id"])
            )
            # The worker asked the CA just now and finds no news: next poll due in a day.
            if certificate["ca_next_poll_at"] is not None:
                certificate["ca_next_poll_at"] = self.now + timedelta(days=1)
        for order in out.get("simca_orders", ()):
            _fix_records(order, "records", order["reference"])
        for decision in out.get("simca_decisions", ()):
            _fix_records(decision, "records", references.get(decision["order_id"]))
        return out["certificates"][0]["id"], out

    def make(
        self, count: int, statuses: Sequence[CertificateStatus], prefix: str, start: int = 0
    ) -> Iterator[tuple[CertificateStatus, str, dict[str, list[dict[str, Any]]]]]:
        for number in range(start, start + count):
            status = self.rng.choice(statuses)
            template = self.rng.choice(self.by_status[status])
            name = f"{prefix}-{number:07d}"
            domain = f"host{number}.{prefix}{number % 97}.example.org"
            certificate_id, rows = self.clone(template, name, domain)
            yield status, certificate_id, rows


def _fix_records(row: dict[str, Any], column: str, reference: str | None) -> None:
    """DNS challenge values derive from the order reference: recompute them for the clone."""
    records = row.get(column)
    if not records or reference is None:
        return
    row[column] = [
        {
            **r,
            "value": challenge_record(reference, r["name"].removeprefix("_acme-challenge.")).value,
        }
        if r.get("name", "").startswith("_acme-challenge.")
        else r
        for r in records
    ]


# ---- writing


@dataclass
class Batch:
    """Rows of many certificates, by table, ready for one bulk insert per table."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    certificates: int = 0

    def add(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        for table, table_rows in rows.items():
            self.rows.setdefault(table, []).extend(table_rows)
        self.certificates += 1


def insert_batch_sync(connection: Any, batch: Batch) -> None:
    for table in Base.metadata.sorted_tables:
        table_rows = batch.rows.get(table.name)
        if table_rows:
            connection.execute(insert(table), table_rows)


async def insert_batch(connection: Any, batch: Batch) -> None:
    for table in Base.metadata.sorted_tables:
        table_rows = batch.rows.get(table.name)
        if table_rows:
            await connection.execute(insert(table), table_rows)


def batches(
    made: Iterator[tuple[CertificateStatus, str, dict[str, list[dict[str, Any]]]]],
    size: int,
    seen: Callable[[CertificateStatus, str], None],
) -> Iterator[Batch]:
    batch = Batch()
    for status, certificate_id, rows in made:
        seen(status, certificate_id)
        batch.add(rows)
        if batch.certificates >= size:
            yield batch
            batch = Batch()
    if batch.certificates:
        yield batch
