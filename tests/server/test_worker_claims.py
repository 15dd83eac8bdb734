"""The CA worker's job queue: claims are leases, shared without overlap, recovered after a crash."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from domain.model import CertificateId
from domain.results import WithdrawalSubmitted
from domain.sandbox import SandboxDecision
from domain.statuses import CertificateStatus
from server.persistence.mapping import certificates, idempotency_keys
from server.worker import KEY_DELETE_BATCH, KEY_RETENTION, MIN_LEASE_SECONDS, CaWorker
from tests.server.conftest import Stack, build_stack

S = CertificateStatus


class SteppedClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


async def pending(stack: Stack, count: int) -> list[CertificateId]:
    return [await stack.drive(f"job-{n}") for n in range(count)]


async def next_polls(stack: Stack) -> dict[str, datetime]:
    async with stack.engine.connect() as connection:
        rows = await connection.execute(select(certificates.c.id, certificates.c.ca_next_poll_at))
        return {row[0]: row[1] for row in rows}


async def test_workers_claiming_at_once_share_the_due_jobs_without_overlap(db_url: str) -> None:
    clock = SteppedClock()
    stack = await build_stack(db_url, clock=clock)
    try:
        made = await pending(stack, 30)
        clock.advance(1)
        workers = [
            CaWorker(stack.db, stack.service, clock, poll_seconds=1, batch_size=8) for _ in range(4)
        ]
        claims = await asyncio.gather(*(w.claim_due() for w in workers))
        claims += await asyncio.gather(*(w.claim_due() for w in workers))
        taken = [cid for claim in claims for cid in claim.ids]
        assert len(taken) == len(set(taken)) == len(made)
        # Claimed: none is due again until its lease runs out.
        again = await asyncio.gather(*(w.claim_due() for w in workers))
        assert [claim.ids for claim in again] == [[], [], [], []]
    finally:
        await stack.db.dispose()


async def test_a_finished_round_makes_waiting_jobs_due_one_poll_later(db_url: str) -> None:
    clock = SteppedClock()
    stack = await build_stack(db_url, clock=clock)
    try:
        [waiting, decided] = await pending(stack, 2)
        withdrawn = await stack.service.withdraw(stack.tenant, decided)
        assert isinstance(withdrawn, WithdrawalSubmitted)
        order_id = (await stack.load(decided)).ca_order_id
        assert order_id is not None and await stack.ca.decide(order_id, SandboxDecision.APPROVE)
        clock.advance(1)
        worker = CaWorker(stack.db, stack.service, clock, poll_seconds=2)

        assert await worker.run_once() == 1

        polls = await next_polls(stack)
        # Nothing new about `waiting`: asked again one poll interval after it was claimed,
        # not when the lease runs out.
        assert polls[waiting] == clock.now() + timedelta(seconds=2)
        # `decided` was settled by the CA: nothing more to ask.
        assert polls[decided] is None
        assert (await stack.load(decided)).status is S.PENDING_APPLICATION
    finally:
        await stack.db.dispose()


async def test_jobs_of_a_worker_that_died_holding_them_are_taken_once_the_lease_ends(
    db_url: str,
) -> None:
    clock = SteppedClock()
    stack = await build_stack(db_url, clock=clock)
    try:
        made = await pending(stack, 3)
        clock.advance(1)
        dead = CaWorker(stack.db, stack.service, clock, poll_seconds=0.5)
        claim = await dead.claim_due()
        assert sorted(claim.ids) == sorted(made)
        # The claiming process dies here: it never asks the CA, never releases.
        survivor = CaWorker(stack.db, stack.service, clock, poll_seconds=0.5)
        clock.advance(MIN_LEASE_SECONDS - 1)
        assert (await survivor.claim_due()).ids == []
        clock.advance(1)
        assert sorted((await survivor.claim_due()).ids) == sorted(made)
    finally:
        await stack.db.dispose()


async def test_idempotency_keys_past_retention_are_forgotten_in_batches_and_newer_ones_kept(
    stack: Stack,
) -> None:
    now = datetime.now(UTC)
    old = now - KEY_RETENTION - timedelta(minutes=1)
    # More than two batches' worth, so the deletion has to go round more than once.
    stale = 2 * KEY_DELETE_BATCH + 3
    rows = [
        {
            "tenant_id": stack.tenant,
            "operation": "withdraw",
            "key": f"{'old' if n < stale else 'new'}-{n}",
            "certificate_id": "c",
            "withdrawal_id": "w",
            "created_at": old if n < stale else now,
        }
        for n in range(stale + 5)
    ]
    async with stack.engine.begin() as connection:
        await connection.execute(insert(idempotency_keys), rows)

    await stack.worker.forget_old_keys()

    async with stack.engine.connect() as connection:
        kept = set(await connection.scalars(select(idempotency_keys.c.key)))
    assert kept == {f"new-{n}" for n in range(stale, stale + 5)}
