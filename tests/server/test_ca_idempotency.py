"""CA requests carry idempotency keys: a repeated key gets the first answer and acts no more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from domain.ca import OrderRequest, WithdrawalAnswer
from domain.results import CertificateChanged, InvalidState, WithdrawalSubmitted
from domain.sandbox import SandboxDecision
from domain.statuses import CertificateStatus, CertificateType, ValidationMethod
from server.ca.simulated import SimulatedCa
from server.ca.sql_book import SqlOrderBook
from server.persistence.database import Database
from tests.server.conftest import Stack
from tests.server.memory_book import MemoryOrderBook
from tests.support import sql_rows

S = CertificateStatus


def clock() -> datetime:
    return datetime.now(UTC)


async def requests_of(stack: Stack, order_id: str) -> list[tuple[str, str, int]]:
    return await sql_rows(
        stack.db,
        "SELECT key, operation, calls FROM simca_requests "
        "WHERE order_id = :order ORDER BY created_at",
        order=order_id,
    )


async def pending(stack: Stack, name: str) -> tuple[str, str]:
    certificate_id = await stack.drive(name)
    order_id = (await stack.load(certificate_id)).ca_order_id
    assert order_id is not None
    return certificate_id, order_id


@pytest.fixture(params=["memory", "sql"])
async def ca(
    request: pytest.FixtureRequest, migrated_sqlite_url: str
) -> AsyncIterator[SimulatedCa]:
    """The simulated CA over each order book (the SQL one on PostgreSQL too: see `stack`)."""
    if request.param == "memory":
        yield SimulatedCa(MemoryOrderBook(), clock)
        return
    db = Database(migrated_sqlite_url)
    yield SimulatedCa(SqlOrderBook(db), clock)
    await db.dispose()


async def test_a_repeated_key_gets_the_first_answer_and_changes_nothing(ca: SimulatedCa) -> None:
    placed = await ca.place_order(
        OrderRequest("cert-1:1", CertificateType.DV, ("a.example.com",), ValidationMethod.DNS)
    )
    first = await ca.request_withdrawal(placed.order_id, key="cert-1:2:withdrawal")
    assert first.answer is WithdrawalAnswer.ACCEPTED
    # The CA approves the withdrawal; the order is cancelled.
    assert await ca.decide(placed.order_id, SandboxDecision.APPROVE)
    decided = (await ca.decisions({placed.order_id: 0}))[placed.order_id]

    again = await ca.request_withdrawal(placed.order_id, key="cert-1:2:withdrawal")

    assert again == first
    # The retry started no second review: nothing more was decided, nothing can be.
    assert (await ca.decisions({placed.order_id: 0}))[placed.order_id] == decided
    assert not await ca.decide(placed.order_id, SandboxDecision.APPROVE)


async def test_a_new_key_is_a_new_request(ca: SimulatedCa) -> None:
    placed = await ca.place_order(
        OrderRequest("cert-2:1", CertificateType.DV, ("b.example.com",), ValidationMethod.DNS)
    )
    await ca.request_withdrawal(placed.order_id, key="cert-2:2:withdrawal")
    assert await ca.decide(placed.order_id, SandboxDecision.REJECT)
    # Rejected: the certificate is back under application; a withdrawal at a later version
    # is a request of its own, and the CA reviews it.
    await ca.request_withdrawal(placed.order_id, key="cert-2:4:withdrawal")
    assert await ca.decide(placed.order_id, SandboxDecision.APPROVE)
    kinds = [d.kind.value for d in (await ca.decisions({placed.order_id: 0}))[placed.order_id]]
    assert kinds == ["WITHDRAWAL_REJECTED", "WITHDRAWAL_APPROVED"]


async def test_the_sql_book_counts_every_call_of_a_key(stack: Stack) -> None:
    certificate_id, order_id = await pending(stack, "counted")
    certificate = await stack.load(certificate_id)
    key = f"{certificate_id}:{certificate.version}:withdrawal"
    for _ in range(3):
        await stack.ca.request_withdrawal(order_id, key=key)
    assert await requests_of(stack, order_id) == [(key, "withdrawal", 3)]


async def test_concurrent_withdrawals_reach_the_ca_with_one_key(stack: Stack) -> None:
    certificate_id, order_id = await pending(stack, "racing")
    results = await asyncio.gather(
        *(stack.service.withdraw(stack.tenant, certificate_id) for _ in range(20))
    )
    assert sum(isinstance(r, WithdrawalSubmitted) for r in results) == 1
    assert all(isinstance(r, WithdrawalSubmitted | InvalidState) for r in results)
    # Every call that reached the CA read the same version, so carried the same key: the
    # CA started one review, however many of them asked.
    [(key, operation, calls)] = await requests_of(stack, order_id)
    assert operation == "withdrawal" and key.startswith(f"{certificate_id}:")
    assert 1 <= calls <= 20
    assert await stack.ca.decide(order_id, SandboxDecision.APPROVE)
    decisions = (await stack.ca.decisions({order_id: 0}))[order_id]
    assert [d.kind.value for d in decisions] == ["WITHDRAWAL_APPROVED"]


async def test_a_retry_after_a_crash_between_the_ca_and_the_write_acts_once(
    stack: Stack,
) -> None:
    certificate_id, order_id = await pending(stack, "crashed")
    before = await stack.load(certificate_id)
    # A process asked the CA (with the key the service derives), then died before writing.
    key = f"{certificate_id}:{before.version}:withdrawal"
    await stack.ca.request_withdrawal(order_id, key=key)

    retried = await stack.service.withdraw(stack.tenant, certificate_id)

    assert isinstance(retried, WithdrawalSubmitted)
    assert retried.certificate.status is S.CA_VERIFYING_WITHDRAWAL
    assert await requests_of(stack, order_id) == [(key, "withdrawal", 2)]


async def test_every_ca_request_of_the_service_carries_its_own_key(stack: Stack) -> None:
    certificate_id, order_id = await pending(stack, "keys")
    verified = await stack.service.verify_domain(stack.tenant, certificate_id)
    deleted = await stack.service.delete(stack.tenant, certificate_id)
    assert isinstance(verified, CertificateChanged) and isinstance(deleted, CertificateChanged)
    operations = [operation for _, operation, _ in await requests_of(stack, order_id)]
    assert operations == ["domain-check", "deletion"]
