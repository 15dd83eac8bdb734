"""Server layer: tenants and the API tokens that name them (only tokens' hashes are stored)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, RowMapping, insert, select
from sqlalchemy.exc import IntegrityError

from domain.model import TenantId, new_id
from server.persistence.database import Database
from server.persistence.shared_loads import SharedLoads
from server.persistence.tables import ApiTokenRow, Base, TenantRow

# Through the metadata rather than `Row.__table__`, which is typed as a bare FromClause.
tenants = Base.metadata.tables[TenantRow.__tablename__]
api_tokens = Base.metadata.tables[ApiTokenRow.__tablename__]

TOKEN_PREFIX = "cg_"
MAX_TENANT_NAME = 100


@dataclass(frozen=True, slots=True)
class Tenant:
    id: TenantId
    name: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> None:
    if not name.strip() or len(name) > MAX_TENANT_NAME:
        raise ValueError(f"A tenant name is 1 to {MAX_TENANT_NAME} characters and not blank.")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TenantStore:
    def __init__(self, db: Database, now: Callable[[], datetime] = _utc_now) -> None:
        self._db = db
        # Tokens presented in one turn of the event loop are looked up in one query.
        self._token_loads = SharedLoads[None](self._tenants_of_hashes, key_column="token_hash")
        self._now = now

    async def ensure_tenant(self, name: str) -> Tenant:
        """The tenant called `name`, created if there is none yet."""
        _check_name(name)
        try:
            return await self._db.write(lambda connection: self._ensure_tenant(connection, name))
        except IntegrityError:
            # Another process created it between our look-up and our insert.
            tenant = await self._db.read(lambda connection: _find(connection, name), by_key=True)
            assert tenant is not None
            return tenant

    async def create_token(self, tenant_name: str) -> str:
        """A new token for the tenant (created if missing); it cannot be read back later."""
        _check_name(tenant_name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def create(connection: Connection) -> None:
            tenant = self._ensure_tenant(connection, tenant_name)
            connection.execute(
                insert(api_tokens).values(
                    id=new_id(),
                    tenant_id=tenant.id,
                    token_hash=hash_token(token),
                    created_at=self._now(),
                )
            )

        await self._db.write(create)
        return token

    async def tenant_for_token(self, token: str) -> Tenant | None:
        # Looked up by its hash: timing can reveal at most a prefix of a hash, never of a token.
        rows = await self._token_loads.load(None, [hash_token(token)])
        return None if not rows else Tenant(TenantId(rows[0]["id"]), rows[0]["name"])

    async def _tenants_of_hashes(self, _: None, hashes: list[str]) -> Sequence[RowMapping]:
        query = (
            select(tenants.c.id, tenants.c.name, api_tokens.c.token_hash)
            .join(api_tokens, api_tokens.c.tenant_id == tenants.c.id)
            .where(api_tokens.c.token_hash.in_(hashes))
        )

        def rows(connection: Connection) -> Sequence[RowMapping]:
            return connection.execute(query).mappings().all()

        # At most `MAX_SHARED_KEYS` hashes, each found by its unique index.
        return await self._db.read(rows, by_key=True)

    async def get(self, tenant_id: TenantId) -> Tenant | None:
        query = select(tenants.c.id, tenants.c.name).where(tenants.c.id == tenant_id)

        def row(connection: Connection) -> Row[Any, Any] | None:
            return connection.execute(query).first()

        found = await self._db.read(row, by_key=True)
        return None if found is None else Tenant(TenantId(found.id), found.name)

    def _ensure_tenant(self, connection: Connection, name: str) -> Tenant:
        tenant = _find(connection, name)
        if tenant is not None:
            return tenant
        tenant = Tenant(TenantId(new_id()), name)
        connection.execute(
            insert(tenants).values(id=tenant.id, name=tenant.name, created_at=self._now())
        )
        return tenant


def _find(connection: Connection, name: str) -> Tenant | None:
    query = select(tenants.c.id).where(tenants.c.name == name)
    tenant_id = connection.execute(query).scalar_one_or_none()
    return None if tenant_id is None else Tenant(TenantId(tenant_id), name)
