"""The service's guarantees under concurrency and crashes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

from sqlalchemy import text

from domain.results import (
    CaAlreadyApproved,
    InvalidState,
    WithdrawalSubmitted,
)
from domain.sandbox import SandboxDecision
from domain.statuses import CertificateStatus, WithdrawalFailureReason, WithdrawalStatus
from tests.server.conftest import Stack
from tests.support import cli_env, free_port, sql_scalar, stop_process

S = CertificateStatus


async def pending(stack: Stack, name: str) -> str:
    return await stack.drive(name)


async def withdrawal_count(stack: Stack, certificate_id: str) -> int:
    count = await sql_scalar(
        stack.db, "SELECT count(*) FROM withdrawals WHERE certificate_id = :id", id=certificate_id
    )
    return int(count or 0)


async def test_fifty_concurrent_withdrawals_have_exactly_one_winner(stack: Stack) -> None:
    certificate_id = await pending(stack, "race")
    results = await asyncio.gather(
        *(stack.service.withdraw(stack.tenant, certificate_id) for _ in range(50))
    )
    winners = [r for r in results if isinstance(r, WithdrawalSubmitted)]
    losers = [r for r in results if isinstance(r, InvalidState)]
    assert len(winners) == 1 and len(losers) == 49
    assert {r.certificate.status for r in losers} == {S.CA_VERIFYING_WITHDRAWAL}
    assert await withdrawal_count(stack, certificate_id) == 1
    certificate = await stack.load(certificate_id)
    assert certificate.status is S.CA_VERIFYING_WITHDRAWAL
    assert certificate.last_withdrawal == winners[0].withdrawal


async def test_fifty_concurrent_withdrawals_with_one_key_get_one_answer(stack: Stack) -> None:
    certificate_id = await pending(stack, "keyed")
    results = await asyncio.gather(
        *(stack.service.withdraw(stack.tenant, certificate_id, "same-key") for _ in range(50))
    )
    assert all(isinstance(r, WithdrawalSubmitted) for r in results), {type(r) for r in results}
    assert len({r.withdrawal.id for r in results if isinstance(r, WithdrawalSubmitted)}) == 1
    assert await withdrawal_count(stack, certificate_id) == 1


async def test_a_withdrawal_racing_a_ca_issue_ends_in_one_consistent_outcome(
    stack: Stack,
) -> None:
    outcomes: dict[str, int] = {}
    for round_ in range(12):
        certificate_id = await pending(stack, f"race{round_}")
        order_id = (await stack.load(certificate_id)).ca_order_id
        assert order_id is not None

        async def ca_issues(order_id: str, delay: float) -> None:
            await asyncio.sleep(delay)
            assert await stack.ca.decide(order_id, SandboxDecision.ISSUE)
            await stack.worker.run_once()

        # The withdrawal gets a head start on odd rounds, the CA on even ones.
        result, _ = await asyncio.gather(
            stack.service.withdraw(stack.tenant, certificate_id),
            ca_issues(order_id, 0.002 * (round_ % 2)),
        )
        # Let the worker catch up with everything the CA decided.
        for _ in range(50):
            await stack.worker.run_once()
            if (await stack.load(certificate_id)).status is not S.CA_VERIFYING_WITHDRAWAL:
                break
            await asyncio.sleep(0.01)
        final = await stack.load(certificate_id)
        withdrawal = final.last_withdrawal
        # The CA issued, so whatever the interleaving the certificate ends ISSUED ...
        assert final.status is S.ISSUED
        if isinstance(result, InvalidState):
            # ... having learnt of the issue before the withdrawal: nothing was withdrawn.
            assert withdrawal is None
            assert await withdrawal_count(stack, certificate_id) == 0
        else:
            # ... or with the withdrawal failed as already approved, exactly once.
            assert isinstance(result, WithdrawalSubmitted | CaAlreadyApproved)
            assert withdrawal is not None and withdrawal.id == result.withdrawal.id
            assert withdrawal.status is WithdrawalStatus.FAILED
            assert withdrawal.failure_reason is WithdrawalFailureReason.CA_ALREADY_APPROVED
            assert await withdrawal_count(stack, certificate_id) == 1
        outcomes[type(result).__name__] = outcomes.get(type(result).__name__, 0) + 1
    assert sum(outcomes.values()) == 12


async def test_a_withdrawal_racing_a_ca_approval_ends_pending_application(stack: Stack) -> None:
    certificate_id = await pending(stack, "approve")
    results = await asyncio.gather(
        stack.service.withdraw(stack.tenant, certificate_id),
        stack.service.withdraw(stack.tenant, certificate_id),
    )
    [winner] = [r for r in results if isinstance(r, WithdrawalSubmitted)]
    order_id = (await stack.load(certificate_id)).ca_order_id
    assert order_id is not None
    assert await stack.ca.decide(order_id, SandboxDecision.APPROVE)
    await stack.worker.run_once()
    final = await stack.load(certificate_id)
    assert final.status is S.PENDING_APPLICATION
    assert final.last_withdrawal is not None
    assert final.last_withdrawal.id == winner.withdrawal.id
    assert final.last_withdrawal.status is WithdrawalStatus.SUCCEEDED


# ---- crashes: real processes killed with SIGKILL

WITHDRAW_THEN_WAIT = textwrap.dedent(
    """
    import asyncio, sys
    from server.container import Container
    from server.settings import Settings

    async def main() -> None:
        container = Container(Settings())
        await container.start()
        result = await container.service.withdraw(sys.argv[1], sys.argv[2])
        print(type(result).__name__, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def spawn_withdrawal(url: str, tenant: str, certificate_id: str, **settings: str) -> str:
    """Withdraw in a child process, then SIGKILL it while it waits for the CA's answer."""
    child = subprocess.Popen(
        [sys.executable, "-c", WITHDRAW_THEN_WAIT, tenant, certificate_id],
        env=cli_env(url, **settings),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return line


async def serve_until_status(
    stack: Stack, certificate_id: str, status: CertificateStatus, **settings: str
) -> None:
    """Run a real `certgraph serve` until the certificate reaches `status` (with a deadline)."""
    url = stack.engine.url.render_as_string(hide_password=False)
    certgraph = os.path.join(os.path.dirname(sys.executable), "certgraph")
    server = subprocess.Popen(  # noqa: ASYNC220 - a child that outlives this call
        [certgraph, "serve", "--port", str(free_port())],
        env=cli_env(url, ca_poll_seconds="0.1", **settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (await stack.load(certificate_id)).status is not status:
            assert server.poll() is None, "the server died"
            assert time.monotonic() < deadline, "the restarted service never caught up"
            await asyncio.sleep(0.1)
    finally:
        stop_process(server, timeout=30)


async def test_a_process_killed_after_accepting_a_withdrawal_resumes_after_restart(
    stack: Stack,
) -> None:
    url = stack.engine.url.render_as_string(hide_password=False)
    certificate_id = await pending(stack, "crash")
    # The child accepts the withdrawal; the CA decides only when told; then the child dies.
    assert spawn_withdrawal(url, stack.tenant, certificate_id) == "WithdrawalSubmitted"
    accepted = await stack.load(certificate_id)
    assert accepted.status is S.CA_VERIFYING_WITHDRAWAL
    assert accepted.ca_order_id is not None
    # The CA answers while no service process runs at all.
    assert await stack.ca.decide(accepted.ca_order_id, SandboxDecision.APPROVE)
    await serve_until_status(stack, certificate_id, S.PENDING_APPLICATION)
    final = await stack.load(certificate_id)
    assert final.status is S.PENDING_APPLICATION
    assert final.last_withdrawal is not None
    assert final.last_withdrawal.status is WithdrawalStatus.SUCCEEDED
    assert await withdrawal_count(stack, certificate_id) == 1


async def test_a_process_killed_after_the_ca_decided_applies_the_answer_after_restart(
    stack: Stack,
) -> None:
    url = stack.engine.url.render_as_string(hide_password=False)
    certificate_id = await pending(stack, "crash2")
    # The CA decides quickly by itself, but this process never polls it. (A worker polling
    # hourly would still take one round at start, and a round that found the withdrawal
    # committed would lease it for the hour.)
    line = spawn_withdrawal(
        url,
        stack.tenant,
        certificate_id,
        ca_auto_decide_seconds="0.05",
        worker="0",
    )
    assert line == "WithdrawalSubmitted"
    await serve_until_status(
        stack, certificate_id, S.PENDING_APPLICATION, ca_auto_decide_seconds="0.05"
    )
    assert (await stack.load(certificate_id)).status is S.PENDING_APPLICATION
    async with stack.engine.connect() as connection:
        stuck = await connection.scalar(
            text("SELECT count(*) FROM certificates WHERE status = 'CA_VERIFYING_WITHDRAWAL'")
        )
    assert stuck == 0
