"""API tokens: minted for a tenant, stored only as a hash, resolved back to their tenant."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from sqlalchemy import text

from domain.model import TenantId
from server.migrate import upgrade
from server.persistence.database import Database
from server.persistence.tenants import TenantStore
from tests.support import counting_statements, run_cli


@pytest.fixture
def store(db: Database) -> TenantStore:
    return TenantStore(db)


async def test_a_created_token_resolves_to_its_tenant(store: TenantStore) -> None:
    token = await store.create_token("acme")

    tenant = await store.tenant_for_token(token)

    assert tenant is not None
    assert tenant.name == "acme"
    assert await store.get(tenant.id) == tenant


async def test_only_the_hash_of_a_token_is_stored(store: TenantStore, db: Database) -> None:
    token = await store.create_token("acme")

    async with db.engine.connect() as connection:
        stored = (await connection.execute(text("SELECT token_hash FROM api_tokens"))).scalar_one()

    assert token.startswith("cg_")
    assert stored != token
    assert token not in stored
    assert stored == hashlib.sha256(token.encode()).hexdigest()


async def test_tokens_presented_together_share_one_query_and_each_gets_its_own_tenant(
    store: TenantStore, db: Database
) -> None:
    acme, globex = await store.create_token("acme"), await store.create_token("globex")
    with counting_statements(db) as statements:
        found = await asyncio.gather(
            *(store.tenant_for_token(token) for token in [acme, globex, "cg_unknown", acme] * 25)
        )

    assert [tenant and tenant.name for tenant in found[:4]] == ["acme", "globex", None, "acme"]
    assert found[4:] == found[:4] * 24
    assert len([s for s in statements if "api_tokens" in s]) == 1


async def test_an_unknown_token_resolves_to_no_tenant(store: TenantStore) -> None:
    await store.create_token("acme")

    assert await store.tenant_for_token("cg_not-a-token") is None
    assert await store.tenant_for_token("") is None


async def test_tokens_for_one_tenant_name_share_the_tenant(store: TenantStore) -> None:
    first = await store.tenant_for_token(await store.create_token("acme"))
    second = await store.tenant_for_token(await store.create_token("acme"))
    other = await store.tenant_for_token(await store.create_token("globex"))

    assert first is not None
    assert first == second
    assert other is not None
    assert other.id != first.id


async def test_ensure_tenant_creates_a_tenant_once(store: TenantStore) -> None:
    created = await store.ensure_tenant("acme")

    assert await store.ensure_tenant("acme") == created
    assert len(created.id) == 32
    assert await store.get(created.id) == created


async def test_concurrent_first_uses_of_a_name_make_one_tenant(store: TenantStore) -> None:
    tenants = await asyncio.gather(*(store.ensure_tenant("acme") for _ in range(8)))

    assert len(set(tenants)) == 1


async def test_an_unknown_tenant_id_is_none(store: TenantStore) -> None:
    assert await store.get(TenantId("0" * 32)) is None


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
async def test_a_blank_or_overlong_tenant_name_is_refused(store: TenantStore, name: str) -> None:
    with pytest.raises(ValueError, match="tenant name"):
        await store.create_token(name)


@pytest.mark.slow
async def test_cli_token_create_prints_a_token_that_resolves(sqlite_url: str) -> None:
    await upgrade(sqlite_url)

    result = await asyncio.to_thread(
        run_cli, "token", "create", "--tenant", "acme", database_url=sqlite_url
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 2, "a line explaining, then the token"
    db = Database(sqlite_url)
    try:
        tenant = await TenantStore(db).tenant_for_token(lines[-1])
    finally:
        await db.dispose()
    assert tenant is not None
    assert tenant.name == "acme"


@pytest.mark.slow
async def test_cli_token_create_refuses_an_unmigrated_database(sqlite_url: str) -> None:
    result = await asyncio.to_thread(
        run_cli, "token", "create", "--tenant", "acme", database_url=sqlite_url
    )

    assert result.returncode != 0
    assert "certgraph migrate" in result.stderr
