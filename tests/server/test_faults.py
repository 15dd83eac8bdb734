"""Faults injected into real processes: the database restarted under load, the CA unreachable,
the server SIGKILLed while withdrawals pour in. Requests fail cleanly (a GraphQL-shaped 503 or
a typed error, never a hang, a bare 500 or a stack trace), the service recovers without a
restart of its own, and no acknowledged change is lost.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from resolvers.ids import CERTIFICATE, WITHDRAWAL, local_id
from server.migrate import upgrade
from server.persistence.database import Database
from server.persistence.mapping import certificates, events, withdrawals
from tests.server.pg_cluster import private_cluster
from tests.support import CERTGRAPH, cli_env, free_port, run_cli, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

INTERNALS = re.compile(r"Traceback|File \"|\.py\b|\bSELECT\b|asyncpg|sqlalchemy|/tmp/")

CREATE = """
mutation($name: String!) {
  createCertificate(input: {name: $name, type: DV, domainType: SINGLE, brand: "DigiCert",
                            domainQuota: 1, validityYears: 1}) {
    __typename ... on CreateCertificateSuccess { certificate { id } }
  }
}
"""
APPLY = """
mutation($id: ID!, $domain: String!) {
  applyForCertificate(input: {certificateId: $id, domain: $domain, validationMethod: DNS}) {
    __typename ... on Error { code }
  }
}
"""
WITHDRAW = """
mutation($id: ID!, $key: String) {
  withdrawApplication(input: {certificateId: $id, idempotencyKey: $key}) {
    __typename
    ... on WithdrawApplicationSuccess { withdrawal { id } certificate { status } }
    ... on CaUnavailableError { retryAfterSeconds }
    ... on Error { code }
  }
}
"""
DECIDE = """
mutation($id: ID!, $decision: SandboxCaDecision!) {
  sandboxCaDecide(input: {certificateId: $id, decision: $decision}) { __typename }
}
"""
REACHABLE = """
mutation($flag: Boolean!) { sandboxSetCaReachable(input: {reachable: $flag}) { reachable } }
"""
STATUS = "query($id: ID!) { certificate(id: $id) { status lastWithdrawal { id status } } }"


# ---- a real `certgraph serve`


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(database_url: str, log: Path, **settings: str) -> Iterator[Service]:
    port = free_port()
    values = {
        "env": "production",
        "sandbox": "1",
        "ca_poll_seconds": "0.1",
        "rate_limit_per_second": "0",
        **settings,
    }
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [CERTGRAPH, "serve", "--port", str(port)],
            env=cli_env(database_url, **values),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    service = Service(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"certgraph serve exited:\n{service.log_text()}"
            try:
                if httpx.get(f"{service.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "certgraph serve did not start"
            time.sleep(0.05)
        yield service
    finally:
        stop_process(process)


def token_for(database_url: str, tenant: str) -> str:
    created = run_cli("token", "create", "--tenant", tenant, database_url=database_url)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


class Client:
    """One tenant's GraphQL client that classifies every answer it gets."""

    def __init__(self, service: Service, token: str, timeout: float = 10) -> None:
        self.service = service
        self.http = httpx.AsyncClient(timeout=timeout, headers={"Authorization": f"Bearer {token}"})
        self.answers: Counter[str] = Counter()
        self.unclean: list[str] = []

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, query: str, **variables: Any) -> dict[str, Any] | None:
        """The operation's `data`, or None when it failed (cleanly, or recorded as unclean)."""
        try:
            response = await self.http.post(
                self.service.graphql_url, json={"query": query, "variables": variables}
            )
        except httpx.TimeoutException:
            self.answers["timeout"] += 1
            self.unclean.append("a request hung past its timeout")
            return None
        except httpx.TransportError as error:
            self.answers["connection error"] += 1
            return self._connection_lost(error)
        body = response.json()
        if INTERNALS.search(response.text):
            self.unclean.append(f"internals in a response: {response.text[:300]}")
        if response.status_code == 503:
            self.answers["503"] += 1
            codes = {e["extensions"]["code"] for e in body["errors"]}
            if codes != {"SERVICE_UNAVAILABLE"} or "retry-after" not in response.headers:
                self.unclean.append(f"an unexplained 503: {response.text[:300]}")
            return None
        if response.status_code != 200:
            self.answers[str(response.status_code)] += 1
            self.unclean.append(f"HTTP {response.status_code}: {response.text[:300]}")
            return None
        if body.get("errors"):
            self.answers["GraphQL error"] += 1
            codes = {e["extensions"]["code"] for e in body["errors"]}
            if codes != {"SERVICE_UNAVAILABLE"}:
                self.unclean.append(f"unexpected errors: {body['errors']}")
            return None
        self.answers["200"] += 1
        data: dict[str, Any] = body["data"]
        return data

    def _connection_lost(self, error: Exception) -> None:
        if self.service.process.poll() is None:
            self.unclean.append(f"the live server dropped a request: {error!r}")
        return None


# ---- (a) the database restarted under load


@dataclass
class Ledger:
    """What the service acknowledged: each must survive every fault."""

    created: set[str] = field(default_factory=set)
    applied: set[str] = field(default_factory=set)
    withdrawn: dict[str, str] = field(default_factory=dict)  # certificate -> withdrawal
    acknowledged_at: list[float] = field(default_factory=list)

    def acknowledge(self) -> None:
        self.acknowledged_at.append(time.monotonic())

    def since(self, moment: float) -> int:
        return sum(1 for t in self.acknowledged_at if t > moment)


async def lifecycle_load(client: Client, ledger: Ledger, worker: int, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        data = await client.call(CREATE, name=f"load-{worker}-{n}")
        if data is None:
            await asyncio.sleep(0.05)
            continue
        certificate_id = data["createCertificate"]["certificate"]["id"]
        ledger.created.add(certificate_id)
        ledger.acknowledge()
        data = await client.call(APPLY, id=certificate_id, domain=f"w{worker}-{n}.example.com")
        if (
            data is None
            or data["applyForCertificate"]["__typename"] != "ApplyForCertificateSuccess"
        ):
            continue
        ledger.applied.add(certificate_id)
        ledger.acknowledge()
        data = await client.call(WITHDRAW, id=certificate_id, key=f"load-{certificate_id}")
        if data is None:
            continue
        result = data["withdrawApplication"]
        if result["__typename"] == "WithdrawApplicationSuccess":
            ledger.withdrawn[certificate_id] = result["withdrawal"]["id"]
            ledger.acknowledge()


async def until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(0.05)


async def stored(database_url: str, ledger: Ledger) -> tuple[set[str], set[str], Counter[str]]:
    """What the database holds of the ledger: certificates, APPLIED events, withdrawals."""
    ids = [local_id(g, CERTIFICATE) for g in ledger.created]
    db = Database(database_url)
    engine = db.engine
    try:
        async with engine.connect() as connection:
            found = set(
                await connection.scalars(
                    select(certificates.c.id).where(certificates.c.id.in_(ids))
                )
            )
            applied = set(
                await connection.scalars(
                    select(events.c.certificate_id).where(
                        events.c.kind == "APPLIED", events.c.certificate_id.in_(ids)
                    )
                )
            )
            counted = await connection.execute(
                select(withdrawals.c.id, func.count())
                .where(withdrawals.c.certificate_id.in_(ids))
                .group_by(withdrawals.c.id)
            )
            copies: Counter[str] = Counter({row[0]: row[1] for row in counted})
            per_certificate = await connection.execute(
                select(withdrawals.c.certificate_id, func.count())
                .where(withdrawals.c.certificate_id.in_(ids))
                .group_by(withdrawals.c.certificate_id)
            )
            assert all(count == 1 for _, count in per_certificate), "a certificate withdrew twice"
    finally:
        await db.dispose()
    return found, applied, copies


async def test_a_database_restart_under_load_fails_cleanly_and_loses_nothing(
    tmp_path: Path,
) -> None:
    with private_cluster() as cluster:
        await upgrade(cluster.url)
        token = token_for(cluster.url, "acme")
        with serving(cluster.url, tmp_path / "serve.log") as service:
            clients = [Client(service, token) for _ in range(6)]
            ledger = Ledger()
            stop = asyncio.Event()
            load = [
                asyncio.create_task(lifecycle_load(c, ledger, i, stop))
                for i, c in enumerate(clients)
            ]
            faults = 0
            try:
                await until(lambda: len(ledger.withdrawn) >= 5, 30, "the load to get going")
                for mode in ("immediate", "fast"):
                    # A crash (recovered from the WAL at the next start), then a clean stop.
                    await asyncio.to_thread(cluster.stop, mode)
                    faults += 1
                    down = time.monotonic()
                    await until(
                        lambda: (
                            sum(c.answers["503"] + c.answers["GraphQL error"] for c in clients) > 0
                        ),
                        10,
                        "requests to fail while the database is down",
                    )
                    async with httpx.AsyncClient() as probe:
                        ready = await probe.get(f"{service.base_url}/readyz", timeout=10)
                    assert ready.status_code == 503
                    await asyncio.sleep(1.5)
                    # Answers already on their way at the crash aside, nothing succeeds while
                    # the database is down.
                    acknowledged_while_down = ledger.since(down + 0.5)
                    await asyncio.to_thread(cluster.start)
                    up = time.monotonic()
                    # Recovered without restarting the service.
                    await until(lambda up=up: ledger.since(up) >= 10, 30, "the service to recover")
                    assert acknowledged_while_down == 0
            finally:
                stop.set()
                await asyncio.gather(*load)
                for client in clients:
                    await client.close()
            assert service.process.poll() is None, "the service died"
            unclean = [u for c in clients for u in c.unclean]
            assert not unclean, unclean[:5]
            answers = sum((c.answers for c in clients), Counter())

        found, applied, copies = await stored(cluster.url, ledger)
    lost_certificates = {local_id(g, CERTIFICATE) for g in ledger.created} - found
    lost_applications = {local_id(g, CERTIFICATE) for g in ledger.applied} - applied
    lost_withdrawals = [
        w for w in ledger.withdrawn.values() if copies[local_id(w, WITHDRAWAL) or ""] != 1
    ]
    assert not lost_certificates and not lost_applications and not lost_withdrawals
    assert faults == 2 and answers["200"] >= 20 and answers["503"] + answers["GraphQL error"] > 0
    print(
        f"\ndatabase restarts: {faults}; answers {dict(answers)}; acknowledged "
        f"{len(ledger.created)} creations, {len(ledger.applied)} applications, "
        f"{len(ledger.withdrawn)} withdrawals; lost 0"
    )


# ---- (b) the CA unreachable


async def test_an_unreachable_ca_changes_nothing_and_the_worker_backs_off_and_resumes(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'certgraph.db'}"
    await upgrade(url)
    token = token_for(url, "acme")
    with serving(url, tmp_path / "serve.log") as service:
        client = Client(service, token)
        try:
            pending: list[str] = []
            for n in range(2):
                data = await client.call(CREATE, name=f"ca-{n}")
                assert data is not None
                certificate_id = data["createCertificate"]["certificate"]["id"]
                applied = await client.call(APPLY, id=certificate_id, domain=f"ca{n}.example.com")
                assert applied is not None
                pending.append(certificate_id)
            fresh = await client.call(CREATE, name="ca-fresh")
            assert fresh is not None
            fresh_id = fresh["createCertificate"]["certificate"]["id"]
            before = await rows(url)

            assert await client.call(REACHABLE, flag=False) is not None
            outage = time.monotonic()
            withdrawn = await client.call(WITHDRAW, id=pending[0], key="ca-key")
            assert withdrawn is not None
            result = withdrawn["withdrawApplication"]
            assert result["__typename"] == "CaUnavailableError"
            assert result["code"] == "CA_UNAVAILABLE" and result["retryAfterSeconds"] > 0
            applied = await client.call(APPLY, id=fresh_id, domain="fresh.example.com")
            assert applied is not None
            assert applied["applyForCertificate"] == {
                "__typename": "CaUnavailableError",
                "code": "CA_UNAVAILABLE",
            }
            assert await rows(url) == before, "a call to the unreachable CA changed something"

            # While the CA is away it approves the domain check; the worker cannot learn of it.
            decided = await client.call(DECIDE, id=pending[1], decision="APPROVE")
            assert decided == {"sandboxCaDecide": {"__typename": "SandboxCaDecideSuccess"}}
            await until(
                lambda: len(backoffs(service.log_text())) >= 4, 15, "the worker to back off"
            )
            waits = backoffs(service.log_text())
            assert waits == sorted(waits) and waits[-1] > waits[0], waits
            status = await client.call(STATUS, id=pending[1])
            assert status is not None
            assert status["certificate"]["status"] == "PENDING_DOMAIN_VERIFICATION"

            assert await client.call(REACHABLE, flag=True) is not None
            back = time.monotonic()

            async def issued() -> bool:
                data = await client.call(STATUS, id=pending[1])
                return data is not None and data["certificate"]["status"] == "ISSUED"

            deadline = back + waits[-1] * 2 + 5
            while not await issued():
                assert time.monotonic() < deadline, "the worker did not resume"
                await asyncio.sleep(0.1)
            resumed_after = time.monotonic() - back
            withdrawn = await client.call(WITHDRAW, id=pending[0], key="ca-key")
            assert withdrawn is not None
            assert withdrawn["withdrawApplication"]["__typename"] == "WithdrawApplicationSuccess"
            assert not client.unclean, client.unclean
        finally:
            await client.close()
    print(
        f"\nCA outage of {back - outage:.1f} s: backoffs {waits}; "
        f"resumed {resumed_after:.1f} s after the CA came back"
    )


def backoffs(log: str) -> list[float]:
    return [float(s) for s in re.findall(r"CA unreachable; next attempt in ([\d.]+) s", log)]


async def rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The service's rows, minus the worker's scheduling column."""
    db = Database(url)
    engine = db.engine
    try:
        async with engine.connect() as connection:
            snapshot = {}
            for table in (certificates, events, withdrawals):
                columns = [c for c in table.columns if c.name != "ca_next_poll_at"]
                result = await connection.execute(select(*columns).order_by(*table.primary_key))
                snapshot[table.name] = [tuple(row) for row in result]
            return snapshot
    finally:
        await db.dispose()


# ---- (c) the server SIGKILLed in the middle of withdrawals


WITHDRAWALS_TO_KILL = 200


async def test_withdrawals_acknowledged_before_a_sigkill_are_there_exactly_once(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'certgraph.db'}"
    await upgrade(url)
    token = token_for(url, "acme")
    log = tmp_path / "serve.log"
    pending: list[str] = []
    acknowledged: dict[str, str] = {}  # certificate -> withdrawal, as the service answered
    kills = 0
    with serving(url, log) as service:
        client = Client(service, token)
        try:
            # Enough that both kills land with withdrawals still queued: the service answers
            # hundreds a second, and the kill comes up to a polling interval late.
            for n in range(WITHDRAWALS_TO_KILL):
                data = await client.call(CREATE, name=f"kill-{n}")
                assert data is not None
                certificate_id = data["createCertificate"]["certificate"]["id"]
                assert await client.call(APPLY, id=certificate_id, domain=f"k{n}.example.com")
                pending.append(certificate_id)
        finally:
            await client.close()

    queue = list(pending)
    for round_ in range(2):
        with serving(url, log) as service:
            clients = [Client(service, token) for _ in range(8)]

            async def withdraw_all(client: Client) -> None:
                while queue:
                    certificate_id = queue.pop()
                    data = await client.call(WITHDRAW, id=certificate_id, key=f"k-{certificate_id}")
                    if data is None:
                        return  # the server is gone
                    result = data["withdrawApplication"]
                    assert result["__typename"] == "WithdrawApplicationSuccess", result
                    acknowledged[certificate_id] = result["withdrawal"]["id"]

            async def kill_mid_load() -> None:
                target = len(acknowledged) + 10
                await until(lambda: len(acknowledged) >= target, 30, "withdrawals to be answered")
                os.kill(service.process.pid, signal.SIGKILL)

            try:
                await asyncio.gather(kill_mid_load(), *(withdraw_all(c) for c in clients))
            finally:
                for client in clients:
                    await client.close()
            assert service.process.wait(timeout=10) == -signal.SIGKILL
            kills += 1
            assert queue, f"round {round_}: every withdrawal finished before the kill"

    # After the last restart: every acknowledged withdrawal is there, exactly once.
    with serving(url, log) as service:
        client = Client(service, token)
        try:
            copies = await withdrawal_copies(url, pending)
            for certificate_id, withdrawal_id in acknowledged.items():
                assert copies.get(certificate_id) == [local_id(withdrawal_id, WITHDRAWAL)]
            # A retry of an unanswered withdrawal with its key acts at most once.
            for certificate_id in pending:
                data = await client.call(WITHDRAW, id=certificate_id, key=f"k-{certificate_id}")
                assert data is not None
                result = data["withdrawApplication"]
                assert result["__typename"] == "WithdrawApplicationSuccess", result
                if certificate_id in acknowledged:
                    assert result["withdrawal"]["id"] == acknowledged[certificate_id]
            copies = await withdrawal_copies(url, pending)
            assert all(len(copies[c]) == 1 for c in pending)
            # The CA approves them all: no withdrawal result is lost either.
            for certificate_id in pending:
                assert await client.call(DECIDE, id=certificate_id, decision="APPROVE")

            async def settled() -> bool:
                for certificate_id in pending:
                    data = await client.call(STATUS, id=certificate_id)
                    assert data is not None
                    if data["certificate"]["status"] != "PENDING_APPLICATION":
                        return False
                    assert data["certificate"]["lastWithdrawal"]["status"] == "SUCCEEDED"
                return True

            deadline = time.monotonic() + 30
            while not await settled():
                assert time.monotonic() < deadline, "the withdrawals were not all resolved"
                await asyncio.sleep(0.2)
            assert not client.unclean, client.unclean
        finally:
            await client.close()
    print(
        f"\nSIGKILLs: {kills}; {len(acknowledged)} of {len(pending)} withdrawals acknowledged "
        "before a kill; each present exactly once, each resolved; lost 0"
    )


async def withdrawal_copies(url: str, certificate_ids: list[str]) -> dict[str, list[str]]:
    ids = {local_id(g, CERTIFICATE): g for g in certificate_ids}
    db = Database(url)
    engine = db.engine
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                select(withdrawals.c.certificate_id, withdrawals.c.id).where(
                    withdrawals.c.certificate_id.in_(list(ids))
                )
            )
            copies: dict[str, list[str]] = {}
            for certificate_id, withdrawal_id in result:
                copies.setdefault(ids[certificate_id], []).append(withdrawal_id)
            return copies
    finally:
        await db.dispose()
