"""Certificate search from the trigram indexes: the same answers as the plain scan, the index
really used (FTS5 on SQLite, pg_trgm on PostgreSQL), and the index following every write."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, insert, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.model import TenantId, new_id
from domain.reading import CertificateFilter, Ordering, PageRequest, SortField
from domain.results import CertificateChanged
from domain.sandbox import SandboxDecision
from domain.statuses import CertificateStatus
from server.migrate import alembic_config, upgrade
from server.persistence import search
from server.persistence.database import Database
from server.persistence.mapping import certificates
from server.persistence.queries import SqlCertificateReader, page_query
from server.persistence.tenants import TenantStore
from server.seed import drive_to
from tests.server.conftest import Stack
from tests.support import counting_statements

START = datetime(2026, 1, 1, tzinfo=UTC)
WHOLE = PageRequest(limit=100)
BY_NAME = Ordering(SortField.NAME, descending=False)

# Characters LIKE, FTS5 queries, SQL strings or case folding could take for something else.
TRICKY = [
    "%",
    "_",
    "/",
    "\\",
    "'",
    '"',
    '""',
    "*",
    "^",
    "(",
    ")",
    ":",
    "-",
    "+",
    " ",
    ".",
    "AND",
    "OR",
    "NOT",
    "NEAR",
    "ß",
    "SS",
    "İ",
    "ǅ",
    "Ω",
    "ω",
    "é",
    "É",
    "🔒",
    "日本",
]
NAMES = [
    "100% sure",
    "100%% sure",
    "my_site",
    "mysite",
    "a/b\\c",
    "it's",
    'say "hi"',
    '""',
    "Straße",
    "STRASSE",
    "İstanbul",
    "istanbul",
    "Ωmega",
    "ωmega",
    "Café",
    "CAFÉ",
    "🔒 vault",
    "日本語サイト",
    "NEAR(a b)",
    "a AND b",
    "NOT this",
    "x*y^z",
    "col:on",
    "-dash+plus",
]
DOMAINS = [
    None,
    "shop.example.org",
    "xn--bcher-kva.example",
    "xn--80ak6aa92e.com",
    "a-b.example.com",
    "*.wild.example.net",
    "100-percent.example",
]


def _search_text(name: str, domains: Sequence[str]) -> str:
    # What SPEC says a search looks at: the name and every domain, lower-cased.
    return " ".join((name, *domains)).lower()


def _row(tenant: TenantId, name: str, domains: Sequence[str], at: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "tenant_id": tenant,
        "name": name,
        "type": "DV",
        "domain_type": "MULTIPLE",
        "brand": "DigiCert",
        "domain_quota": 5,
        "validity_years": 1,
        "status": "PENDING_DOMAIN_VERIFICATION",
        "version": 1,
        "created_at": at,
        "updated_at": at,
        "domain": domains[0] if domains else None,
        "additional_domains": list(domains[1:]),
        "search_text": _search_text(name, domains),
        "ca_cursor": 0,
        "pending_domains": [],
    }


def _writing(engine: AsyncEngine) -> AbstractAsyncContextManager[AsyncConnection]:
    # The write lock up front, as every writer takes it (see tests.resolvers.conftest).
    return engine.execution_options(sqlite_begin="IMMEDIATE").begin()


async def _insert(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with _writing(engine) as connection:
        await connection.execute(insert(certificates), rows)


def _generated(tenant: TenantId, count: int, seed: int) -> list[dict[str, Any]]:
    """Names and domains mixed from the tricky pieces above, and a few plain ones."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        name = rng.choice(NAMES) + "".join(rng.choice(TRICKY) for _ in range(rng.randrange(3)))
        if i % 4 == 0:
            name = rng.choice(TRICKY).join(rng.sample(NAMES, 2))
        domains = [d for d in rng.sample(DOMAINS, rng.randrange(3)) if d]
        rows.append(_row(tenant, name, domains, START + timedelta(seconds=i)))
    return rows


def _searches(rows: list[dict[str, Any]], seed: int) -> list[str]:
    """Substrings of the texts (in their original case too), the pieces, and near misses."""
    rng = random.Random(seed)
    found = []
    for row in rng.sample(rows, 25):
        original = " ".join(filter(None, (row["name"], row["domain"], *row["additional_domains"])))
        start = rng.randrange(len(original))
        for length in (1, 2, 3, 4, 7, 12):
            found.append(original[start : start + length])
        found.append(original.upper())
    return [
        *found,
        *TRICKY,
        *NAMES,
        *(d for d in DOMAINS if d),
        "zzz", "%%%", "___", "a%b", "100_", "1000", "xn--", "XN--BCHER", "i̇stanbul", "strasse",
        '"hi"', '" OR "', "' OR 1=1 --", "%' OR '1'='1", "\\%", "/%", "//", "\u017f", "\u212a",
    ]  # fmt: skip


async def _ids(reader: SqlCertificateReader, tenant: TenantId, term: str) -> list[str]:
    page = await reader.page(tenant, CertificateFilter(search=term), BY_NAME, WHOLE)
    return [c.id for c in page.certificates]


async def test_index_answers_exactly_as_the_plain_scan_and_the_spec(stack: Stack) -> None:
    rows = _generated(stack.tenant, 90, seed=12)
    await _insert(stack.engine, rows)
    # Another tenant's rows hold every search too: they must never come back.
    await _insert(stack.engine, _generated(stack.other_tenant, 30, seed=12))
    indexed = SqlCertificateReader(stack.db)
    plain = SqlCertificateReader(stack.db, search_index=False)
    by_name = sorted(rows, key=lambda r: (r["name"], r["id"]))
    on_sqlite = stack.engine.dialect.name == "sqlite"

    terms = _searches(rows, seed=4)
    for term in terms:
        expected = [r["id"] for r in by_name if term.lower() in r["search_text"]]
        with counting_statements(stack.db) as statements:
            got = await _ids(indexed, stack.tenant, term)
        assert got == expected, term
        assert got == await _ids(plain, stack.tenant, term), term
        where = CertificateFilter(search=term)
        assert await indexed.count(stack.tenant, where) == len(expected), term
        if on_sqlite:
            # Three characters or more: the page was read through the FTS table.
            through_index = any("certificate_search" in s for s in statements)
            assert through_index is (len(term.lower()) >= search.MIN_INDEXED_LENGTH), term
    assert len(terms) > 200
    assert sum(1 for t in terms if any(t.lower() in r["search_text"] for r in rows)) > 150


async def test_a_search_with_more_hits_than_the_index_bound_reads_in_order_and_agrees(
    sqlite_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        *_generated(sqlite_stack.tenant, 40, seed=3),
        _row(sqlite_stack.tenant, "Needle", ["needle.example.com"], START),
    ]
    await _insert(sqlite_stack.engine, rows)
    monkeypatch.setattr(search, "INDEX_CANDIDATES", 5)
    reader = SqlCertificateReader(sqlite_stack.db)
    by_name = sorted(rows, key=lambda r: (r["name"], r["id"]))
    common, rare = "ple", "needle"  # "ple": in every example domain
    assert sum(common in r["search_text"] for r in rows) > 5

    for term in (common, rare):
        with counting_statements(sqlite_stack.db) as statements:
            got = await _ids(reader, sqlite_stack.tenant, term)
        assert got == [r["id"] for r in by_name if term in r["search_text"]]
        page_statement = statements[-1]
        assert ("certificate_search_keys" in page_statement) is (term == rare)


# ---- the plan: the index is what the database reads


def _sqlite_plan(connection: Connection, sql: str) -> list[str]:
    return [row[3] for row in connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]


def _literal_sql(query: Any, dialect: Any) -> str:
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


async def test_sqlite_reads_a_search_from_the_fts_table_not_the_tenants_rows(
    sqlite_stack: Stack,
) -> None:
    await _insert(sqlite_stack.engine, _generated(sqlite_stack.tenant, 300, seed=5))
    for ordering in (Ordering(), BY_NAME, Ordering(SortField.EXPIRES_AT, descending=False)):
        query = page_query(
            sqlite_stack.tenant,
            CertificateFilter(search="zzz"),
            ordering,
            PageRequest(limit=50),
            search_indexed=True,
        )
        sql = _literal_sql(query, sqlite.dialect())
        async with sqlite_stack.engine.connect() as connection:
            plan = await connection.run_sync(_sqlite_plan, sql)

        assert any("certificate_search VIRTUAL TABLE" in step for step in plan), plan
        # Certificates are fetched one by one by id, for the FTS table's hits: no scan of
        # the table or of the tenant's rows through an ordering index.
        touching = [step for step in plan if " certificates " in f"{step} "]
        assert touching == [
            "SEARCH certificates USING INDEX sqlite_autoindex_certificates_1 (id=?)"
        ], plan


def _vm_steps(path: str, sql: str) -> int:
    """How much work SQLite does for `sql`, in thousands of virtual machine instructions."""
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    with sqlite3.connect(path) as connection:
        connection.set_progress_handler(step, 1000)
        connection.execute(sql).fetchall()
    return steps


async def test_sqlite_search_work_does_not_grow_with_the_tenant(sqlite_stack: Stack) -> None:
    path = sqlite_stack.engine.url.database
    assert path is not None
    where = CertificateFilter(search="zzz")

    def work(indexed: bool) -> int:
        query = page_query(
            sqlite_stack.tenant, where, Ordering(), PageRequest(limit=50), search_indexed=indexed
        )
        return _vm_steps(path, _literal_sql(query, sqlite.dialect()))

    await _insert(sqlite_stack.engine, _generated(sqlite_stack.tenant, 500, seed=6))
    small = work(True), work(False)
    await _insert(sqlite_stack.engine, _generated(sqlite_stack.tenant, 4500, seed=7))
    large = work(True), work(False)

    assert large[1] >= 8 * max(small[1], 1)  # the scan grows with the tenant (10x the rows)
    assert large[0] <= small[0] + 1  # the index does not


async def test_postgresql_answers_a_search_from_the_trigram_index(pg_url: str) -> None:
    await upgrade(pg_url)
    db = Database(pg_url)
    engine = db.engine
    try:
        tenant = (await TenantStore(db).ensure_tenant("acme")).id
        await _insert(engine, _generated(tenant, 20000, seed=8))
        async with _writing(engine) as connection:
            await connection.execute(text("ANALYZE certificates"))
        query = page_query(tenant, CertificateFilter(search="zzz"), Ordering(), PageRequest(50))
        sql = _literal_sql(query, engine.dialect)
        async with engine.connect() as connection:
            plan = "\n".join((await connection.execute(text(f"EXPLAIN {sql}"))).scalars())
    finally:
        await db.dispose()

    assert "ix_certificates_search_trgm" in plan, plan
    assert "Seq Scan on certificates" not in plan, plan


# ---- the index follows every write


async def _found(stack: Stack, term: str, *, deleted: bool = False) -> set[str]:
    """What a search finds; on SQLite, the FTS table alone finds the same in every status."""
    reader = SqlCertificateReader(stack.db)

    async def search(statuses: frozenset[CertificateStatus] | None) -> set[str]:
        where = CertificateFilter(search=term, statuses=statuses)
        page = await reader.page(stack.tenant, where, Ordering(), WHOLE)
        return {c.id for c in page.certificates}

    if stack.engine.dialect.name == "sqlite":
        async with stack.engine.connect() as connection:
            in_index = await connection.run_sync(_fts_ids, term)
        assert in_index == await search(frozenset(CertificateStatus)), term
    return await search(frozenset({CertificateStatus.DELETED}) if deleted else None)


def _fts_ids(connection: Connection, term: str) -> set[str]:
    phrase = '"' + term.lower().replace('"', '""') + '"'
    rows = connection.execute(
        text(
            "SELECT k.certificate_id FROM certificate_search AS s "
            "JOIN certificate_search_keys AS k ON k.key = s.rowid "
            "WHERE certificate_search MATCH :phrase"
        ),
        {"phrase": phrase},
    )
    return set(rows.scalars())


async def test_searches_follow_creation_domain_changes_renames_and_deletion(stack: Stack) -> None:
    certificate_id = await drive_to(
        stack.service,
        stack.ca,
        stack.tenant,
        CertificateStatus.CA_VERIFYING_DOMAIN_ADDITION,
        name="Needle Web",
        domain="needle.example.org",
    )
    mine = {certificate_id}
    assert await _found(stack, "NEEDLE WEB") == mine
    assert await _found(stack, "www.needle.example.org") == mine
    # Asked for, not yet covered: not searchable until the CA approves it.
    assert await _found(stack, "api.needle") == set()

    certificate = await stack.load(certificate_id)
    assert certificate.ca_order_id is not None
    assert await stack.ca.decide(certificate.ca_order_id, SandboxDecision.APPROVE)
    await stack.worker.run_once()
    assert await _found(stack, "api.needle") == mine

    # No operation renames a certificate yet; a plain UPDATE is what one would do.
    async with _writing(stack.engine) as connection:
        await connection.execute(
            text(
                "UPDATE certificates SET name = 'Haystack', "
                "search_text = replace(search_text, 'needle web', 'haystack') WHERE id = :id"
            ),
            {"id": certificate_id},
        )
    assert await _found(stack, "needle web") == set()
    assert await _found(stack, "haystack") == mine
    assert await _found(stack, "www.needle") == mine

    # Deleting (through the CA, as it is under application) keeps the row, status DELETED:
    # found only when DELETED is asked for.
    assert isinstance(await stack.service.delete(stack.tenant, certificate_id), CertificateChanged)
    assert await stack.ca.decide(certificate.ca_order_id, SandboxDecision.APPROVE)
    await stack.worker.run_once()
    assert (await stack.load(certificate_id)).status is CertificateStatus.DELETED
    assert await _found(stack, "haystack") == set()
    assert await _found(stack, "haystack", deleted=True) == mine

    # Removing the row takes it out of the index.
    async with _writing(stack.engine) as connection:
        for table in ("certificate_events", "certificate_documents", "withdrawals", "change_feed"):
            await connection.execute(
                text(f"DELETE FROM {table} WHERE certificate_id = :id"), {"id": certificate_id}
            )
        await connection.execute(
            text("DELETE FROM certificates WHERE id = :id"), {"id": certificate_id}
        )
    assert await _found(stack, "haystack", deleted=True) == set()
    if stack.engine.dialect.name == "sqlite":
        async with _writing(stack.engine) as connection:
            keys = await connection.execute(text("SELECT count(*) FROM certificate_search_keys"))
            assert keys.scalar_one() == 0
            # FTS5's own consistency check of the index structure.
            check = "INSERT INTO certificate_search (certificate_search) VALUES ('integrity-check')"
            await connection.execute(text(check))


# ---- migration 0005: backfill and downgrade


def _migrate(url: str, revision: str, *, down: bool = False) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    return run


def _index_objects(connection: Connection) -> set[str]:
    if connection.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE name LIKE 'certificate_search%'"
    else:
        query = "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_certificates_search_trgm'"
    return set(connection.execute(text(query)).scalars())


async def test_the_migration_indexes_existing_rows_and_downgrades_cleanly(
    empty_db_url: str,
) -> None:
    db = Database(empty_db_url)
    engine = db.engine
    try:
        async with _writing(engine) as connection:
            await connection.run_sync(_migrate(empty_db_url, "0004"))
        tenant = (await TenantStore(db).ensure_tenant("acme")).id
        before = _row(tenant, "Made Before", ["before.example.com"], START)
        await _insert(engine, [before])

        async with _writing(engine) as connection:
            await connection.run_sync(_migrate(empty_db_url, "0005"))
            assert await connection.run_sync(_index_objects)
        reader = SqlCertificateReader(db)
        where = CertificateFilter(search="made before")
        found = await reader.page(tenant, where, Ordering(), WHOLE)
        assert [c.id for c in found.certificates] == [before["id"]]
        if engine.dialect.name == "sqlite":
            async with engine.connect() as connection:
                assert await connection.run_sync(_fts_ids, "made before") == {before["id"]}

        async with _writing(engine) as connection:
            await connection.run_sync(_migrate(empty_db_url, "0004", down=True))
            assert await connection.run_sync(_index_objects) == set()
        # Without the triggers, writes go on; upgrading again indexes what they wrote.
        during = _row(tenant, "Made During", ["during.example.com"], START)
        await _insert(engine, [during])
        async with _writing(engine) as connection:
            await connection.run_sync(_migrate(empty_db_url, "0005"))
        for term, row in (("made before", before), ("made during", during)):
            where = CertificateFilter(search=term)
            found = await reader.page(tenant, where, Ordering(), WHOLE)
            assert [c.id for c in found.certificates] == [row["id"]]
            if engine.dialect.name == "sqlite":
                async with engine.connect() as connection:
                    assert await connection.run_sync(_fts_ids, term) == {row["id"]}
    finally:
        await db.dispose()
