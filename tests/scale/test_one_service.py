"""Three `certgraph serve` processes on one PostgreSQL database behave as one service.

(a) a change made through one process reaches a subscriber of another, and the CA's answer,
applied by a third, too; (b) 500 withdrawals through all three: every CA review handled once,
none stuck, no subscriber misses a change; (c) a process killed with SIGKILL in the middle of
applying CA decisions: the others finish its jobs.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import httpx
import pytest
from sqlalchemy import text

from domain.service import CertificateService
from domain.statuses import CertificateStatus
from server.container import Container
from server.settings import Settings
from tests.scale.conftest import (
    DECIDE,
    WITHDRAW,
    Cluster,
    Process,
    eventually,
    local,
    subscribed,
)

pytestmark = pytest.mark.slow

S = CertificateStatus
APPLIED = "certgraph_ca_decisions_applied_total"
CLAIMED = "certgraph_ca_jobs_claimed_total"
WITHDRAWN_EVENTS = ["CREATED", "APPLIED", "WITHDRAWAL_REQUESTED", "WITHDRAWAL_SUCCEEDED"]


async def scalar(cluster: Cluster, sql: str, **params: object) -> int:
    async with cluster.engine.connect() as connection:
        return int(await connection.scalar(text(sql), params) or 0)


async def test_a_subscriber_on_b_hears_a_withdrawal_made_on_a_and_the_answer_applied_by_c(
    cluster: Cluster,
) -> None:
    [certificate] = await cluster.seed_pending(1)
    a, b = await cluster.start(["A", "B"], worker="0")
    [c] = await cluster.start(["C"], worker="1")

    async with httpx.AsyncClient(timeout=30) as client, subscribed(b, ids=[certificate]) as on_b:
        withdrawn = await a.graphql(client, WITHDRAW, id=certificate)
        assert withdrawn["withdrawApplication"]["__typename"] == "WithdrawApplicationSuccess"
        [requested] = await on_b.until(lambda r: len(r) >= 1, within=15, what="B to hear it")
        assert (requested["previousStatus"], requested["status"]) == (
            "PENDING_DOMAIN_VERIFICATION",
            "CA_VERIFYING_WITHDRAWAL",
        )
        assert requested["certificate"]["status"] == "CA_VERIFYING_WITHDRAWAL"

        # The CA approves (told through A); only C asks the CA for decisions.
        decided = await a.graphql(client, DECIDE, id=certificate, decision="APPROVE")
        assert decided["sandboxCaDecide"]["__typename"] == "SandboxCaDecideSuccess"
        received = await on_b.until(lambda r: len(r) >= 2, within=15, what="the CA's answer")
        succeeded = received[1]
        assert (succeeded["previousStatus"], succeeded["status"]) == (
            "CA_VERIFYING_WITHDRAWAL",
            "PENDING_APPLICATION",
        )
        # Read afresh by B, although C made the change.
        assert succeeded["certificate"]["status"] == "PENDING_APPLICATION"
        assert succeeded["certificate"]["version"] == requested["certificate"]["version"] + 1

    assert [await p.metric(APPLIED) for p in (a, b, c)] == [0, 0, 1]
    # B delivered exactly the two changes to its subscription: none twice, none lost.
    assert len(received) == 2
    assert await b.metric("certgraph_changes_delivered_total") == 2

    # A subscriber that comes back elsewhere, from the cursor of the first change, gets the
    # second one (from the history), then nothing more.
    async with subscribed(c, ids=[certificate], after=requested["cursor"]) as on_c:
        [replayed] = await on_c.until(lambda r: len(r) >= 1, within=15, what="the catch-up")
    assert replayed["cursor"] == succeeded["cursor"]
    assert replayed["status"] == "PENDING_APPLICATION"


async def test_five_hundred_withdrawals_through_three_processes_are_each_handled_once(
    cluster: Cluster,
) -> None:
    count = 500
    certificates = await cluster.seed_pending(count)
    wanted = set(certificates)
    processes = await cluster.start(
        ["A", "B", "C"], ca_auto_decide_seconds="1", ca_poll_seconds="1"
    )
    b = processes[1]

    async with httpx.AsyncClient(timeout=60) as client, subscribed(b) as on_b:
        gate = asyncio.Semaphore(24)

        async def withdraw(process: Process, certificate: str) -> str:
            async with gate:
                data = await process.graphql(client, WITHDRAW, id=certificate)
            return str(data["withdrawApplication"]["__typename"])

        # Each certificate through one process; every fifth also through the next process at
        # the same moment (a client retrying elsewhere): one of the two wins.
        requests = []
        for n, certificate in enumerate(certificates):
            requests.append(withdraw(processes[n % 3], certificate))
            if n % 5 == 0:
                requests.append(withdraw(processes[(n + 1) % 3], certificate))
        answers = Counter(await asyncio.gather(*requests))
        assert answers["WithdrawApplicationSuccess"] == count, answers
        assert answers["InvalidCertificateStateError"] == len(requests) - count, answers

        async def all_withdrawn() -> bool:
            done = await scalar(
                cluster,
                "SELECT count(*) FROM certificates WHERE status = 'PENDING_APPLICATION'",
            )
            return done == count

        await eventually(all_withdrawn, within=90, what="every withdrawal to be decided")
        # Every status change of every certificate reaches the subscriber on B.
        received = await on_b.until(
            lambda r: len([c for c in r if c["certificate"]["id"] in wanted]) >= 2 * count,
            within=30,
            what="B to hear every change",
        )
    heard = Counter(
        (change["certificate"]["id"], change["status"])
        for change in received
        if change["certificate"]["id"] in wanted
    )
    expected = {
        (cid, status)
        for cid in certificates
        for status in (
            "CA_VERIFYING_WITHDRAWAL",
            "PENDING_APPLICATION",
        )
    }
    missed = expected - set(heard)
    duplicates = sum(n - 1 for n in heard.values())
    stuck = await scalar(
        cluster, "SELECT count(*) FROM certificates WHERE status = 'CA_VERIFYING_WITHDRAWAL'"
    )
    await assert_each_withdrawal_handled_once(cluster, count)
    applied = [await p.metric(APPLIED) for p in processes]
    claimed = [await p.metric(CLAIMED) for p in processes]
    calls = await scalar(
        cluster, "SELECT sum(calls) FROM simca_requests WHERE operation = 'withdrawal'"
    )
    print(
        f"\n500 withdrawals, 3 processes: {len(requests)} requests, CA calls {calls} on "
        f"{count} keys, decisions applied {applied} (sum {sum(applied):.0f}), poll jobs "
        f"claimed {claimed}, subscriber on B heard {sum(heard.values())} changes, missed "
        f"{len(missed)}, duplicates {duplicates}, stuck {stuck}"
    )
    assert not missed and duplicates == 0 and stuck == 0
    assert sum(applied) == count
    # The duplicated requests that reached the CA carried the key of the first.
    assert count <= calls <= len(requests)


async def assert_each_withdrawal_handled_once(cluster: Cluster, count: int) -> None:
    """From the CA's own records and the service's decision log: no review twice."""
    # The CA: one withdrawal request per order (one key), approved once, nothing else.
    per_order = await scalar(
        cluster,
        "SELECT count(*) FROM (SELECT order_id FROM simca_requests WHERE operation = "
        "'withdrawal' GROUP BY order_id HAVING count(*) > 1) AS twice",
    )
    assert per_order == 0
    assert await scalar(cluster, "SELECT count(*) FROM simca_requests") == count
    decisions = await scalar(cluster, "SELECT count(*) FROM simca_decisions")
    approvals = await scalar(
        cluster,
        "SELECT count(DISTINCT order_id) FROM simca_decisions WHERE kind = 'WITHDRAWAL_APPROVED'",
    )
    assert decisions == approvals == count
    # The service: every certificate went through exactly these events, once each.
    async with cluster.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT certificate_id, string_agg(kind, ',' ORDER BY version) "
                "FROM certificate_events GROUP BY certificate_id"
            )
        )
        histories = Counter(row[1] for row in rows)
    assert histories == {",".join(WITHDRAWN_EVENTS): count}
    assert (
        await scalar(
            cluster,
            "SELECT count(*) FROM withdrawals WHERE status = 'SUCCEEDED' "
            "AND certificate_id IN (SELECT id FROM certificates)",
        )
        == await scalar(cluster, "SELECT count(*) FROM withdrawals")
        == count
    )
    # No job is left: nothing awaits a CA decision.
    assert (
        await scalar(cluster, "SELECT count(*) FROM certificates WHERE ca_next_poll_at IS NOT NULL")
        == 0
    )


async def test_a_process_killed_while_applying_decisions_leaves_its_jobs_to_the_others(
    cluster: Cluster,
) -> None:
    count = 300
    certificates = await cluster.seed_pending(count)
    await withdraw_in_process(cluster, [local(c) for c in certificates])

    async def c_is_mid_batch() -> bool:
        # Some decisions applied, and a batch C claimed still being worked through.
        done = await scalar(
            cluster, "SELECT count(*) FROM certificates WHERE status = 'PENDING_APPLICATION'"
        )
        return done >= 1 and await leased(cluster) >= 20

    # C alone works: the CA decides after half a second, C applies the decisions. The kill
    # must land while C holds claimed jobs; if C finished its batch just before, run it again.
    orphaned = 0
    for _ in range(5):
        [c] = await cluster.start(["C"], ca_auto_decide_seconds="0.5", ca_poll_seconds="0.5")
        await eventually(
            c_is_mid_batch, within=60, what="C to be in the middle of a batch", every=0.02
        )
        c.kill()
        assert c.popen.returncode == -signal.SIGKILL
        orphaned = await leased(cluster)
        if orphaned:
            break
    applied_by_c = await scalar(
        cluster, "SELECT count(*) FROM certificates WHERE status = 'PENDING_APPLICATION'"
    )
    assert orphaned >= 1

    a, b = await cluster.start(["A", "B"], ca_auto_decide_seconds="0.5", ca_poll_seconds="0.5")

    async def all_withdrawn() -> bool:
        done = await scalar(
            cluster, "SELECT count(*) FROM certificates WHERE status = 'PENDING_APPLICATION'"
        )
        return done == count

    await eventually(all_withdrawn, within=90, what="A and B to finish C's jobs")
    await assert_each_withdrawal_handled_once(cluster, count)
    by_others = [await p.metric(APPLIED) for p in (a, b)]
    print(
        f"\nSIGKILL: C applied {applied_by_c} of {count} and died holding {orphaned} claimed "
        f"jobs; A and B applied {by_others} (sum {sum(by_others):.0f}); stuck 0, each once"
    )
    assert sum(by_others) == count - applied_by_c


async def leased(cluster: Cluster) -> int:
    """Certificates awaiting the CA whose next poll a claim pushed out (leases last 5 s, while
    a poll interval here is 0.5 s): claimed by a worker and not yet done with."""
    return await scalar(
        cluster,
        "SELECT count(*) FROM certificates WHERE status = 'CA_VERIFYING_WITHDRAWAL' "
        "AND ca_next_poll_at > now() + interval '2 seconds'",
    )


async def withdraw_in_process(cluster: Cluster, certificate_ids: list[str]) -> None:
    container = Container(Settings(database_url=cluster.database_url), run_background=False)
    service: CertificateService = container.service
    gate = asyncio.Semaphore(12)

    async def one(certificate_id: str) -> str:
        async with gate:
            return type(await service.withdraw(cluster.tenant, certificate_id)).__name__

    try:
        outcomes = Counter(await asyncio.gather(*(one(c) for c in certificate_ids)))
    finally:
        await container.close()
    assert outcomes == {"WithdrawalSubmitted": len(certificate_ids)}
