"""The withdrawal stories through a real server: gql over HTTP, and a subscriber over WebSocket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from gql.client import AsyncClientSession
from sqlalchemy import text

from server.migrate import upgrade
from server.persistence.database import Database
from tests.e2e.conftest import (
    LEGACY_WS,
    TRANSPORT_WS,
    Server,
    ServerFactory,
    Subscription,
    execute,
    running,
    settings_for,
    wait_for_subscribers,
)

CREATE = """
mutation($name: String!) {
  createCertificate(input: {name: $name, type: DV, domainType: SINGLE, brand: "DigiCert",
                            domainQuota: 1, validityYears: 1}) {
    ... on CreateCertificateSuccess { certificate { id status } }
  }
}
"""
APPLY = """
mutation($id: ID!, $domain: String!) {
  applyForCertificate(input: {certificateId: $id, domain: $domain, validationMethod: DNS}) {
    __typename
    ... on ApplyForCertificateSuccess { certificate { status } }
  }
}
"""
WITHDRAW = """
mutation($id: ID!) {
  withdrawApplication(input: {certificateId: $id}) {
    __typename
    ... on Error { message code }
    ... on WithdrawApplicationSuccess {
      message certificate { status } withdrawal { id status previousStatus }
    }
    ... on CaAlreadyApprovedError {
      certificate { status } withdrawal { id status failureReason }
    }
    ... on WithdrawalNotAllowedError { reason certificate { status } }
  }
}
"""
DECIDE = """
mutation($id: ID!, $decision: SandboxCaDecision!) {
  sandboxCaDecide(input: {certificateId: $id, decision: $decision}) { __typename }
}
"""
REVOKE = """
mutation($id: ID!) { revokeCertificate(input: {certificateId: $id}) { __typename
  ... on CertificateChangeSuccess { certificate { status } } } }
"""
DELETE = """
mutation($id: ID!) { deleteCertificate(input: {certificateId: $id}) { __typename
  ... on CertificateChangeSuccess { certificate { status } } } }
"""
CERTIFICATE = """
query($id: ID!) {
  certificate(id: $id) {
    status statusLabel availableActions domainValidation { method }
    lastWithdrawal { id status failureReason }
    events { kind }
  }
}
"""
CHANGES = """
subscription($ids: [ID!]) {
  certificateStatusChanged(certificateIds: $ids) {
    previousStatus status changedAt
    certificate { id status lastWithdrawal { id status failureReason } }
  }
}
"""


async def applied(session: AsyncClientSession, name: str) -> str:
    created = await execute(session, CREATE, {"name": name})
    certificate_id: str = created["createCertificate"]["certificate"]["id"]
    result = await execute(session, APPLY, {"id": certificate_id, "domain": f"{name}.example.com"})
    assert result["applyForCertificate"]["__typename"] == "ApplyForCertificateSuccess"
    return certificate_id


async def decide(session: AsyncClientSession, certificate_id: str, decision: str) -> None:
    result = await execute(session, DECIDE, {"id": certificate_id, "decision": decision})
    assert result["sandboxCaDecide"]["__typename"] == "SandboxCaDecideSuccess"


async def status_becomes(
    session: AsyncClientSession, certificate_id: str, status: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        certificate: dict[str, Any] = (await execute(session, CERTIFICATE, {"id": certificate_id}))[
            "certificate"
        ]
        if certificate["status"] == status:
            return certificate
        if time.monotonic() > deadline:
            raise AssertionError(f"still {certificate['status']}, never {status}")
        await asyncio.sleep(0.05)


async def withdrawal_story(server: Server, subprotocol: str = TRANSPORT_WS) -> None:
    token, tenant_id = await server.token("acme")
    async with server.http(token) as http, server.websocket(token, subprotocol=subprotocol) as ws:
        certificate_id = await applied(http, "shop")
        subscription = Subscription(ws, CHANGES, {"ids": [certificate_id]})
        try:
            await wait_for_subscribers(server, tenant_id)

            withdrawn = (await execute(http, WITHDRAW, {"id": certificate_id}))[
                "withdrawApplication"
            ]
            assert withdrawn["__typename"] == "WithdrawApplicationSuccess"
            assert withdrawn["message"] == (
                "Request for canceling the application submitted successfully."
            )
            assert withdrawn["certificate"]["status"] == "CA_VERIFYING_WITHDRAWAL"
            assert withdrawn["withdrawal"]["status"] == "PENDING"
            withdrawal_id = withdrawn["withdrawal"]["id"]

            first = (await subscription.next())["certificateStatusChanged"]
            assert first["previousStatus"] == "PENDING_DOMAIN_VERIFICATION"
            assert first["status"] == "CA_VERIFYING_WITHDRAWAL"

            await decide(http, certificate_id, "APPROVE")
            second = (await subscription.next())["certificateStatusChanged"]
            assert second["previousStatus"] == "CA_VERIFYING_WITHDRAWAL"
            assert second["status"] == "PENDING_APPLICATION"
            assert second["certificate"]["status"] == "PENDING_APPLICATION"
            assert second["certificate"]["lastWithdrawal"] == {
                "id": withdrawal_id,
                "status": "SUCCEEDED",
                "failureReason": None,
            }
        finally:
            await subscription.close()

        certificate = (await execute(http, CERTIFICATE, {"id": certificate_id}))["certificate"]
        assert certificate["statusLabel"] == "Pending application"
        assert certificate["availableActions"] == ["APPLY", "DELETE"]
        assert certificate["domainValidation"] is None
        assert [e["kind"] for e in certificate["events"]] == [
            "CREATED",
            "APPLIED",
            "WITHDRAWAL_REQUESTED",
            "WITHDRAWAL_SUCCEEDED",
        ]


async def test_the_full_withdrawal_story_reaches_a_subscriber(server: Server) -> None:
    await withdrawal_story(server)


async def test_the_story_over_the_legacy_graphql_ws_protocol(server: Server) -> None:
    await withdrawal_story(server, subprotocol=LEGACY_WS)


@pytest.mark.slow
async def test_the_full_withdrawal_story_on_postgresql(pg_url: str) -> None:
    await upgrade(pg_url)
    with running(settings_for(pg_url)) as server:
        await withdrawal_story(server)
    db = Database(pg_url)
    engine = db.engine
    try:
        async with engine.connect() as connection:
            kinds = (
                (
                    await connection.execute(
                        text("SELECT kind FROM certificate_events ORDER BY certificate_id, version")
                    )
                )
                .scalars()
                .all()
            )
    finally:
        await db.dispose()
    assert kinds == ["CREATED", "APPLIED", "WITHDRAWAL_REQUESTED", "WITHDRAWAL_SUCCEEDED"]


async def test_withdrawing_after_the_ca_issued_is_refused_at_once(
    start_server: ServerFactory,
) -> None:
    # The worker polls hourly: the service learns of the issue only from the withdrawal.
    server = start_server(ca_poll_seconds=3600)
    token, _ = await server.token("acme")
    async with server.http(token) as http:
        certificate_id = await applied(http, "shop")
        await decide(http, certificate_id, "ISSUE")
        before = (await execute(http, CERTIFICATE, {"id": certificate_id}))["certificate"]
        assert before["status"] == "PENDING_DOMAIN_VERIFICATION"

        refused = (await execute(http, WITHDRAW, {"id": certificate_id}))["withdrawApplication"]
        assert refused["__typename"] == "CaAlreadyApprovedError"
        assert refused["code"] == "CA_ALREADY_APPROVED"
        assert refused["certificate"]["status"] == "ISSUED"
        assert refused["withdrawal"]["status"] == "FAILED"
        assert refused["withdrawal"]["failureReason"] == "CA_ALREADY_APPROVED"

        listed = await execute(
            http,
            """{ certificates(first: 10) {
                   nodes { id status lastWithdrawal { status failureReason } } } }""",
        )
        assert listed["certificates"]["nodes"] == [
            {
                "id": certificate_id,
                "status": "ISSUED",
                "lastWithdrawal": {"status": "FAILED", "failureReason": "CA_ALREADY_APPROVED"},
            }
        ]


async def test_an_issue_after_the_withdrawal_reaches_the_subscriber(server: Server) -> None:
    token, tenant_id = await server.token("acme")
    async with server.http(token) as http, server.websocket(token) as ws:
        certificate_id = await applied(http, "shop")
        subscription = Subscription(ws, CHANGES, {"ids": None})
        try:
            await wait_for_subscribers(server, tenant_id)
            withdrawn = await execute(http, WITHDRAW, {"id": certificate_id})
            assert withdrawn["withdrawApplication"]["__typename"] == "WithdrawApplicationSuccess"
            assert (await subscription.next())["certificateStatusChanged"]["status"] == (
                "CA_VERIFYING_WITHDRAWAL"
            )
            await decide(http, certificate_id, "ISSUE")
            issued = (await subscription.next())["certificateStatusChanged"]
            assert issued["previousStatus"] == "CA_VERIFYING_WITHDRAWAL"
            assert issued["status"] == "ISSUED"
            assert issued["certificate"]["lastWithdrawal"]["status"] == "FAILED"
            assert issued["certificate"]["lastWithdrawal"]["failureReason"] == (
                "CA_ALREADY_APPROVED"
            )
        finally:
            await subscription.close()


async def test_withdrawal_is_refused_once_deletion_or_revocation_is_requested(
    server: Server,
) -> None:
    token, _ = await server.token("acme")
    async with server.http(token) as http:
        deleting = await applied(http, "deleting")
        deleted = await execute(http, DELETE, {"id": deleting})
        assert deleted["deleteCertificate"]["certificate"]["status"] == "CA_VERIFYING_DELETION"
        refused = (await execute(http, WITHDRAW, {"id": deleting}))["withdrawApplication"]
        assert refused["__typename"] == "WithdrawalNotAllowedError"
        assert refused["code"] == "WITHDRAWAL_NOT_ALLOWED"
        assert refused["reason"] == "DELETION_REQUESTED"
        assert refused["certificate"]["status"] == "CA_VERIFYING_DELETION"

        revoking = await applied(http, "revoking")
        await decide(http, revoking, "ISSUE")
        await status_becomes(http, revoking, "ISSUED")
        revoked = await execute(http, REVOKE, {"id": revoking})
        assert revoked["revokeCertificate"]["certificate"]["status"] == "CA_VERIFYING_REVOCATION"
        refused = (await execute(http, WITHDRAW, {"id": revoking}))["withdrawApplication"]
        assert refused["__typename"] == "WithdrawalNotAllowedError"
        assert refused["reason"] == "REVOCATION_REQUESTED"
