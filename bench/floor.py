"""The floor: a hand-written Starlette + SQLAlchemy Core + orjson endpoint for scenarios (a), (b).

What someone would write without GraphQL, tuned as they reasonably would: the same
authentication (token hash looked up per request) and the same rows as certgraph reads, but
statements built once, only the columns the answer needs, one connection per request for the
page and its events (one `IN (...)` query), read the way certgraph reads (on SQLite at once on
the event loop, `server.persistence.database.Database.reading`), and the JSON written with
orjson. It answers `POST /graphql` with exactly the JSON certgraph gives for the documents in
`bench.operations` (the run checks that before measuring), picked by `operationName`.

    uvicorn bench.floor:app_from_env --factory   # CERTGRAPH_DATABASE_URL=...
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.lifecycle import available_actions
from domain.statuses import STATUS_LABELS, CertificateStatus, DomainType
from server.persistence.database import Database
from server.persistence.mapping import certificates, events, withdrawals
from server.persistence.tenants import api_tokens, tenants

c, e, w = certificates.c, events.c, withdrawals.c

TENANT_OF_TOKEN = (
    select(tenants.c.id)
    .join(api_tokens, api_tokens.c.tenant_id == tenants.c.id)
    .where(api_tokens.c.token_hash == bindparam("hash"))
)
PAGE = (
    select(
        c.id,
        c.name,
        c.type,
        c.domain_type,
        c.brand,
        c.domain,
        c.additional_domains,
        c.status,
        c.domain_quota,
        c.version,
        c.created_at,
        c.updated_at,
        c.issued_at,
        c.expires_at,
        c.validation_method,
        c.validation_records,
        c.validation_verified_at,
        c.organization_name,
        c.organization_country,
        c.organization_verified_at,
        w.id.label("w_id"),
        w.status.label("w_status"),
        w.failure_reason,
        w.previous_status,
        w.requested_at,
        w.resolved_at,
    )
    .select_from(certificates.outerjoin(withdrawals, w.id == c.last_withdrawal_id))
    .where(c.tenant_id == bindparam("tenant"), c.status != CertificateStatus.DELETED.value)
    .order_by(c.created_at.desc(), c.id.desc())
    .limit(bindparam("limit"))
)
EVENTS = (
    select(e.id, e.certificate_id, e.kind, e.from_status, e.to_status, e.at, e.message)
    .where(e.certificate_id.in_(bindparam("ids", expanding=True)))
    .order_by(e.certificate_id, e.version)
)
STATUS = select(c.status, c.version, c.updated_at).where(
    c.id == bindparam("id"), c.tenant_id == bindparam("tenant")
)

JSON = {"content-type": "application/json"}
LABELS = {status.value: label for status, label in STATUS_LABELS.items()}
DOMAIN_TYPES = {t.value: t for t in DomainType}
STATUSES = {s.value: s for s in CertificateStatus}


def global_id(type_name: str, local_id: str) -> str:
    return base64.b64encode(f"{type_name}:{local_id}".encode()).decode()


def local_id(global_id_: str, type_name: str) -> str | None:
    try:
        kind, _, value = base64.b64decode(global_id_, validate=True).decode().partition(":")
    except ValueError:
        return None
    return value if kind == type_name else None


def cursor(row: Any) -> str:
    key = ["CREATED_AT", row.created_at.isoformat(), row.id]
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode()


def node(row: Any, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    domain_count = (1 if row.domain else 0) + len(row.additional_domains or ())
    return {
        "id": global_id("Certificate", row.id),
        "name": row.name,
        "type": row.type,
        "domainType": row.domain_type,
        "brand": row.brand,
        "domain": row.domain,
        "additionalDomains": row.additional_domains or [],
        "status": row.status,
        "statusLabel": LABELS[row.status],
        "availableActions": available_actions(
            STATUSES[row.status], DOMAIN_TYPES[row.domain_type], domain_count, row.domain_quota
        ),
        "version": row.version,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "issuedAt": row.issued_at,
        "expiresAt": row.expires_at,
        "domainValidation": {
            "method": row.validation_method,
            "records": row.validation_records or [],
            "verifiedAt": row.validation_verified_at,
        }
        if row.validation_method
        else None,
        "organization": {
            "name": row.organization_name,
            "country": row.organization_country,
            "verifiedAt": row.organization_verified_at,
        }
        if row.organization_name is not None
        else None,
        "lastWithdrawal": {
            "id": global_id("Withdrawal", row.w_id),
            "status": row.w_status,
            "failureReason": row.failure_reason,
            "previousStatus": row.previous_status,
            "requestedAt": row.requested_at,
            "resolvedAt": row.resolved_at,
        }
        if row.w_id is not None
        else None,
        "events": history,
    }


def console_list(connection: Connection, tenant: str, variables: dict[str, Any]) -> dict[str, Any]:
    first = int(variables["first"])
    rows = connection.execute(PAGE, {"tenant": tenant, "limit": first + 1}).all()
    page = rows[:first]
    history: dict[str, list[dict[str, Any]]] = {row.id: [] for row in page}
    if page:
        for ev in connection.execute(EVENTS, {"ids": list(history)}):
            history[ev.certificate_id].append(
                {
                    "id": global_id("CertificateEvent", ev.id),
                    "kind": ev.kind,
                    "fromStatus": ev.from_status,
                    "toStatus": ev.to_status,
                    "at": ev.at,
                    "message": ev.message,
                }
            )
    return {
        "certificates": {
            "nodes": [node(row, history[row.id]) for row in page],
            "pageInfo": {
                "hasNextPage": len(rows) > first,
                "endCursor": cursor(page[-1]) if page else None,
            },
        }
    }


def status_poll(connection: Connection, tenant: str, variables: dict[str, Any]) -> dict[str, Any]:
    certificate_id = local_id(str(variables["id"]), "Certificate")
    row = (
        connection.execute(STATUS, {"id": certificate_id, "tenant": tenant}).first()
        if certificate_id
        else None
    )
    found = (
        {"status": row.status, "version": row.version, "updatedAt": row.updated_at} if row else None
    )
    return {"certificate": found}


OPERATIONS = {"ConsoleList": console_list, "StatusPoll": status_poll}


def refuse(status: int, message: str) -> Response:
    return Response(orjson.dumps({"errors": [{"message": message}]}), status, headers=JSON)


def create_floor(db: Database, *, through_aiosqlite: bool = False) -> Starlette:
    """The floor; `through_aiosqlite`: each statement on aiosqlite's thread, as an async
    Starlette app plainly written reads (the floor before certgraph read SQLite at once)."""

    async def graphql(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return refuse(401, "Authentication required")
        body = orjson.loads(await request.body())
        operation = OPERATIONS.get(body.get("operationName"))
        if operation is None:
            return refuse(400, "Unknown operation")
        token_hash = hashlib.sha256(token.strip().encode()).hexdigest()
        variables = body.get("variables") or {}

        def answer(connection: Connection) -> dict[str, Any] | None:
            tenant = connection.execute(TENANT_OF_TOKEN, {"hash": token_hash}).scalar()
            return None if tenant is None else operation(connection, tenant, variables)

        if through_aiosqlite:
            async with db.engine.connect() as connection:
                data = await connection.run_sync(answer)
        else:
            # As certgraph reads: on SQLite at once on the event loop, without aiosqlite's thread.
            async with db.reading() as read:
                data = await read(answer)
        if data is None:
            return refuse(401, "Unknown token")
        return Response(orjson.dumps({"data": data}), headers=JSON)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', headers=JSON)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await db.dispose()

    return Starlette(
        routes=[Route("/graphql", graphql, methods=["POST"]), Route("/healthz", healthz)],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    return create_floor(
        Database(os.environ["CERTGRAPH_DATABASE_URL"]),
        through_aiosqlite=os.environ.get("CERTGRAPH_FLOOR_READS") == "aiosqlite",
    )
