"""Fixtures for resolver tests: the real container over a migrated SQLite file, and the schema
executed in-process with a context for a tenant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.types import ExecutionResult

from domain.model import TenantId, new_id
from resolvers.context import Caller, Context
from resolvers.ids import CERTIFICATE, to_global_id
from server.container import Container
from server.http.graphql_routes import api_services
from server.http.schema import build_schema
from server.persistence.mapping import certificates, events, withdrawals
from server.settings import Settings

CREATE = """
mutation Create($input: CreateCertificateInput!) {
  createCertificate(input: $input) {
    __typename
    ... on CreateCertificateSuccess { certificate { id status version } }
    ... on Error { message code }
  }
}
"""

APPLY = """
mutation Apply($input: ApplyForCertificateInput!) {
  applyForCertificate(input: $input) {
    __typename
    ... on ApplyForCertificateSuccess { certificate { id status } }
    ... on Error { message code }
    ... on CertificateNotFoundError { certificateId }
    ... on ValidationError { field }
    ... on InvalidCertificateStateError { currentStatus allowedStatuses }
    ... on CaUnavailableError { retryAfterSeconds }
  }
}
"""

DECIDE = """
mutation Decide($input: SandboxCaDecideInput!) {
  sandboxCaDecide(input: $input) {
    __typename
    ... on Error { message code }
    ... on InvalidCertificateStateError { currentStatus allowedStatuses }
    ... on CertificateNotFoundError { certificateId }
    ... on SandboxCaDecideSuccess { certificate { id status } }
  }
}
"""

STATUS = "query Status($id: ID!) { certificate(id: $id) { status version } }"


class GraphQLFailed(AssertionError):
    pass


@dataclass
class Api:
    """The schema run in-process, as the GraphQL endpoint runs it, for one of two tenants."""

    container: Container
    schema: strawberry.Schema
    acme: Caller
    globex: Caller

    def context(self, caller: Caller | None = None, *, cache: bool = True) -> Context:
        return Context(api_services(self.container), caller or self.acme, cache_loads=cache)

    async def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        caller: Caller | None = None,
    ) -> ExecutionResult:
        return await self.schema.execute(
            query, variable_values=dict(variables or {}), context_value=self.context(caller)
        )

    async def data(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        result = await self.execute(query, variables, caller=caller)
        if result.errors:
            raise GraphQLFailed(result.errors)
        assert result.data is not None
        return result.data

    # ---- the usual steps

    async def create(
        self,
        *,
        name: str = "web",
        type: str = "DV",
        domain_type: str = "SINGLE",
        quota: int = 1,
        caller: Caller | None = None,
    ) -> str:
        data = await self.data(
            CREATE,
            {
                "input": {
                    "name": name,
                    "type": type,
                    "domainType": domain_type,
                    "brand": "DigiCert",
                    "domainQuota": quota,
                    "validityYears": 1,
                }
            },
            caller=caller,
        )
        result = data["createCertificate"]
        assert result["__typename"] == "CreateCertificateSuccess", result
        certificate_id: str = result["certificate"]["id"]
        return certificate_id

    async def apply(
        self,
        certificate_id: str,
        domain: str = "web.example.com",
        *,
        organization: Mapping[str, str] | None = None,
        additional: list[str] | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        variables: dict[str, Any] = {
            "certificateId": certificate_id,
            "domain": domain,
            "validationMethod": "DNS",
        }
        if organization is not None:
            variables["organization"] = dict(organization)
        if additional is not None:
            variables["additionalDomains"] = additional
        data = await self.data(APPLY, {"input": variables}, caller=caller)
        result: dict[str, Any] = data["applyForCertificate"]
        return result

    async def applied(
        self, name: str = "web", *, caller: Caller | None = None, **create: Any
    ) -> str:
        """A certificate in PENDING_DOMAIN_VERIFICATION."""
        certificate_id = await self.create(name=name, caller=caller, **create)
        organization = (
            {"name": "Acme", "country": "DE"} if create.get("type") in ("OV", "EV") else None
        )
        result = await self.apply(
            certificate_id, f"{name}.example.com", organization=organization, caller=caller
        )
        assert result["__typename"] == "ApplyForCertificateSuccess", result
        return certificate_id

    async def decide(self, certificate_id: str, decision: str) -> dict[str, Any]:
        data = await self.data(
            DECIDE, {"input": {"certificateId": certificate_id, "decision": decision}}
        )
        result: dict[str, Any] = data["sandboxCaDecide"]
        return result

    async def status(self, certificate_id: str, *, caller: Caller | None = None) -> str | None:
        data = await self.data(STATUS, {"id": certificate_id}, caller=caller)
        certificate = data["certificate"]
        return None if certificate is None else str(certificate["status"])

    async def wait_for_status(
        self, certificate_id: str, status: str, *, within: float = 10.0
    ) -> None:
        """Wait (with a deadline) until the worker has applied the CA's decision."""

        async def reached() -> bool:
            return await self.status(certificate_id) == status

        await eventually(reached, within=within, what=f"{certificate_id} to be {status}")

    async def issued(self, name: str = "web") -> str:
        certificate_id = await self.applied(name)
        assert (await self.decide(certificate_id, "ISSUE"))[
            "__typename"
        ] == "SandboxCaDecideSuccess"
        await self.wait_for_status(certificate_id, "ISSUED")
        return certificate_id


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "sandbox": True,
        "ca_auto_decide_seconds": 0,
        "ca_poll_seconds": 0.05,
        "auth": "token",
        "env": "development",
    }
    values.update(overrides)
    return Settings(**values)


async def start_api(url: str, *, run_background: bool = True, **settings: Any) -> Api:
    container = Container(settings_for(url, **settings), run_background=run_background)
    await container.start()
    acme = await container.tenants.ensure_tenant("acme")
    globex = await container.tenants.ensure_tenant("globex")
    return Api(
        container=container,
        schema=build_schema(sandbox=True),
        acme=Caller(acme.id, acme.name),
        globex=Caller(globex.id, globex.name),
    )


@pytest.fixture
async def api(migrated_sqlite_url: str) -> AsyncIterator[Api]:
    """The container with its CA worker polling every 50 ms; the CA decides only when told."""
    started = await start_api(migrated_sqlite_url)
    yield started
    await started.container.close()


@pytest.fixture
async def still_api(migrated_sqlite_url: str) -> AsyncIterator[Api]:
    """No background worker: the service learns nothing from the CA on its own."""
    started = await start_api(migrated_sqlite_url, run_background=False)
    yield started
    await started.container.close()


# ---- plain-SQL set-up, independent of the code under test


async def insert_certificate(
    engine: AsyncEngine,
    tenant_id: TenantId,
    *,
    name: str,
    created_at: datetime,
    status: str = "PENDING_APPLICATION",
    type: str = "DV",
    domain: str | None = None,
    expires_at: datetime | None = None,
    updated_at: datetime | None = None,
    certificate_id: str | None = None,
    withdrawn: bool = False,
) -> str:
    """One certificate row with its CREATED event; returns its global id.

    `withdrawn`: applied (with a DNS record and an organization) and then withdrawn, with
    the events and the PENDING withdrawal that go with it.
    """
    certificate_id = certificate_id or new_id()
    withdrawal_id = new_id() if withdrawn else None
    # A writer takes SQLite's write lock up front, as the service's writers do: a deferred
    # transaction that opens the search index (migration 0004) first holds a read snapshot,
    # and cannot wait for the lock from there if the worker is writing meanwhile.
    async with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        await connection.execute(
            insert(certificates).values(
                id=certificate_id,
                tenant_id=tenant_id,
                name=name,
                type=type,
                domain_type="SINGLE",
                brand="DigiCert",
                domain_quota=1,
                validity_years=1,
                status=status,
                version=3 if withdrawn else 1,
                created_at=created_at,
                updated_at=updated_at or created_at,
                domain=domain,
                additional_domains=[],
                search_text=" ".join(filter(None, (name, domain))).lower(),
                issued_at=None,
                expires_at=expires_at,
                ca_cursor=0,
                pending_domains=[],
                last_withdrawal_id=withdrawal_id,
                validation_method="DNS" if withdrawn else None,
                validation_records=[{"name": "_acme-challenge.x", "type": "TXT", "value": "v"}]
                if withdrawn
                else None,
                organization_name="Acme" if withdrawn else None,
                organization_country="DE" if withdrawn else None,
            )
        )
        if withdrawn:
            await connection.execute(
                insert(withdrawals).values(
                    id=withdrawal_id,
                    certificate_id=certificate_id,
                    status="PENDING",
                    failure_reason=None,
                    previous_status="PENDING_DOMAIN_VERIFICATION",
                    requested_at=created_at,
                    resolved_at=None,
                )
            )
        history: list[tuple[str, str | None, str]] = [
            ("CREATED", None, "PENDING_APPLICATION" if withdrawn else status)
        ]
        if withdrawn:
            history += [
                ("APPLIED", "PENDING_APPLICATION", "PENDING_DOMAIN_VERIFICATION"),
                ("WITHDRAWAL_REQUESTED", "PENDING_DOMAIN_VERIFICATION", status),
            ]
        await connection.execute(
            insert(events),
            [
                {
                    "id": new_id(),
                    "certificate_id": certificate_id,
                    "version": version,
                    "kind": kind,
                    "from_status": source,
                    "to_status": target,
                    "at": created_at,
                    "message": None,
                }
                for version, (kind, source, target) in enumerate(history, start=1)
            ],
        )
    return to_global_id(CERTIFICATE, certificate_id)


def at(minute: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC).replace(minute=minute % 60, hour=minute // 60)
