"""The soak's hostile requests sent as GraphQL over HTTP (issue 12, items 1, 3, 4, 5 and 8).

Each item sends a bounded number of requests, each with a client-side timeout, and counts what
the server answered (`Outcomes`); the harness (`bench.soak`) times the item and measures the
server meanwhile. The WebSocket and raw-socket items are in `bench.soak_sockets`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import operations


@dataclass(frozen=True)
class Sizes:
    """How much of each hostile input to send (`--quick` shrinks them)."""

    timeout: float = 30.0
    fan_out: range = range(10, 27)
    ws_documents: int = 12
    ws_document_bytes: int = 16_000_000
    domains: int = 40_000
    applications: int = 2
    search_clients: int = 4
    searches: int = 5
    lock_seconds: float = 8.0
    header_mib: int = 16
    half_open_seconds: float = 15.0
    sockets: int = 1_000
    errors: int = 300


QUICK = Sizes(
    timeout=20.0,
    fan_out=range(10, 15),
    ws_documents=2,
    ws_document_bytes=1_000_000,
    domains=5_000,
    applications=1,
    searches=3,
    lock_seconds=2.0,
    header_mib=2,
    half_open_seconds=2.0,
    sockets=100,
    errors=40,
)


@dataclass
class Target:
    """The server under soak, the tenants' tokens and what the items may use up."""

    url: str
    token: str
    withdraw_token: str
    withdrawable: list[str]
    database: Path
    sizes: Sizes

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {
            "Authorization": f"Bearer {token or self.token}",
            "Content-Type": "application/json",
        }
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.sizes.timeout)


@dataclass
class Outcomes:
    """What the server answered to one item's requests, and the slowest answer."""

    counts: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, seconds: float) -> None:
        self.counts[what] += 1
        self.slowest = max(self.slowest, seconds)

    def merge(self, other: Outcomes) -> None:
        self.counts.update(other.counts)
        self.slowest = max(self.slowest, other.slowest)
        self.notes += other.notes

    def summary(self) -> str:
        answers = ", ".join(f"{what} x{n}" for what, n in self.counts.most_common())
        return "; ".join([answers, *self.notes])


def describe(status: int, payload: Any) -> str:
    """`200 data`, `200 BAD_USER_INPUT`, `200 ValidationError INPUT`, `503`, ..."""
    if not isinstance(payload, dict):
        return str(status)
    errors = payload.get("errors")
    if errors:
        code = (errors[0].get("extensions") or {}).get("code", "error")
        return f"{status} {code}"
    data = payload.get("data")
    if isinstance(data, dict) and len(data) == 1:
        result = next(iter(data.values()))
        if isinstance(result, dict) and "__typename" in result:
            return " ".join(str(p) for p in (status, result["__typename"], result.get("code")) if p)
    return f"{status} data" if data is not None else str(status)


async def post(client: httpx.AsyncClient, body: dict[str, Any] | bytes, out: Outcomes) -> Any:
    """Send one GraphQL request; count its answer (or timeout) and return the JSON, if any."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = time.monotonic()
    try:
        answer = await client.post("/graphql", content=content)
    except httpx.TimeoutException:
        out.add("timeout", time.monotonic() - sent)
        return None
    except httpx.HTTPError as error:
        out.add(type(error).__name__, time.monotonic() - sent)
        return None
    try:
        payload = answer.json()
    except ValueError:
        payload = None
    out.add(describe(answer.status_code, payload), time.monotonic() - sent)
    return payload


# ---- (1) exponential fragment fan-out


def fan_out_document(n: int) -> str:
    """About 10 tokens a level; validating it naively walks 2**n fragment paths."""
    fragments = ["fragment D0 on Query { viewer { tenant { name } } }"]
    fragments += [f"fragment D{i} on Query {{ ...D{i - 1} ...D{i - 1} }}" for i in range(1, n + 1)]
    return f"{{ ...D{n} }} " + " ".join(fragments)


async def fan_out(target: Target, out: Outcomes) -> None:
    """n = 10, 11, ... until one is not answered in time: the next ones would only queue."""
    async with target.client() as client:
        for n in target.sizes.fan_out:
            try:
                answer = await post(client, {"query": fan_out_document(n)}, out)
            except asyncio.CancelledError:
                out.notes.append(f"n={n} unanswered when the item was cut")
                raise
            if answer is None:
                rest = range(n + 1, target.sizes.fan_out.stop)
                if rest:
                    out.notes.append(f"n={n} unanswered, n={rest.start}..{rest.stop - 1} not sent")
                return


# ---- (3) thousands of additional domains

CREATE = """
mutation Create($input: CreateCertificateInput!) {
  createCertificate(input: $input) {
    __typename ... on CreateCertificateSuccess { certificate { id } } ... on Error { code }
  }
}
"""
APPLY = """
mutation Apply($input: ApplyForCertificateInput!) {
  applyForCertificate(input: $input) { __typename ... on Error { code } }
}
"""


async def many_domains(target: Target, out: Outcomes) -> None:
    """A fresh MULTIPLE certificate each time (quota 250), applied for with far more domains."""
    domains = [f"h{i}.soak.example.com" for i in range(target.sizes.domains)]
    async with target.client() as client:
        for number in range(target.sizes.applications):
            draft = {
                "name": f"soak-{time.time_ns()}-{number}",
                "type": "DV",
                "domainType": "MULTIPLE",
                "brand": "DigiCert",
                "domainQuota": 250,
                "validityYears": 1,
            }
            made = await post(client, _request(CREATE, {"input": draft}), Outcomes())
            certificate = ((made or {}).get("data") or {}).get("createCertificate", {})
            if "certificate" not in certificate:
                raise RuntimeError(f"createCertificate failed: {made}")
            application = {
                "certificateId": certificate["certificate"]["id"],
                "domain": "soak.example.com",
                "additionalDomains": domains,
                "validationMethod": "DNS",
            }
            await post(client, _request(APPLY, {"input": application}), out)


def _request(query: str, variables: dict[str, Any]) -> dict[str, Any]:
    return {"query": " ".join(query.split()), "variables": variables}


# ---- (4) searches that scan, and searches the database refuses

SEARCH = (
    "query Search($s: String) { certificates(first: 50, filter: {search: $s}) { nodes { id } } }"
)
# SQLite refuses LIKE patterns longer than SQLITE_MAX_LIKE_PATTERN_LENGTH (50,000 bytes).
TOO_COMPLEX = 60_000


async def searches(target: Target, out: Outcomes) -> None:
    sizes = target.sizes
    async with target.client() as client:
        for length in (201, TOO_COMPLEX):
            await post(client, {"query": SEARCH, "variables": {"s": "q" * length}}, out)

    async def one_client() -> None:
        async with target.client() as client:
            for _ in range(sizes.searches):
                await post(client, {"query": SEARCH, "variables": {"s": "zzz"}}, out)

    await asyncio.gather(*(one_client() for _ in range(sizes.search_clients)))


# ---- (5) writes queued behind another process's write lock

READ_BACK = "query Back($id: ID!) { certificate(id: $id) { version } }"


def _hold_write_lock(path: str, seconds: float, held: Event) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    held.set()
    time.sleep(seconds)
    connection.execute("ROLLBACK")
    connection.close()


async def queued_writes(target: Target, out: Outcomes) -> None:
    """Another process holds BEGIN IMMEDIATE while three withdrawals queue; afterwards each
    acknowledged withdrawal must still be there."""
    ids = [target.withdrawable.pop() for _ in range(3)]
    context = multiprocessing.get_context("spawn")
    held = context.Event()
    seconds = target.sizes.lock_seconds
    holder = context.Process(target=_hold_write_lock, args=(str(target.database), seconds, held))
    holder.start()
    try:
        if not await asyncio.to_thread(held.wait, 30):
            raise RuntimeError("the lock holder did not take SQLite's write lock")
        async with target.client(target.withdraw_token) as client:
            answers = await asyncio.gather(
                *(post(client, withdrawal(global_id), out) for global_id in ids)
            )
            await asyncio.to_thread(holder.join, seconds + 30)
            for global_id, answer in zip(ids, answers, strict=True):
                await _check_kept(client, global_id, answer, out)
    finally:
        if holder.is_alive():
            holder.kill()
        await asyncio.to_thread(holder.join)


def withdrawal(global_id: str) -> bytes:
    key = f"soak-{time.time_ns()}-{global_id}"
    return operations.body(operations.WITHDRAW, "Withdraw", {"id": global_id, "key": key})


async def _check_kept(
    client: httpx.AsyncClient, global_id: str, answer: Any, out: Outcomes
) -> None:
    acknowledged = ((answer or {}).get("data") or {}).get("withdrawApplication") or {}
    if acknowledged.get("__typename") != operations.WITHDRAW_SUCCESS:
        return
    back = await post(client, _request(READ_BACK, {"id": global_id}), Outcomes())
    now = (((back or {}).get("data") or {}).get("certificate") or {}).get("version", -1)
    if now < acknowledged["certificate"]["version"]:
        out.notes.append(f"acknowledged withdrawal of {global_id} LOST")


# ---- (8) a burst of client mistakes

MISTAKES: list[dict[str, Any]] = [
    {"query": "{ certificates(first: 5 { nodes { id } } }"},
    {"query": "{ certificates(first: 5) { nodes { noSuchField } } }"},
    {
        "query": "query($f: Int!) { certificates(first: $f) { nodes { id } } }",
        "variables": {"f": "x"},
    },
    {"query": "{ certificates(first: -5) { nodes { id } } }"},
    {"query": '{ certificate(id: "not-a-global-id") { id } }'},
]


async def mistakes(target: Target, out: Outcomes) -> None:
    async with target.client() as client:
        for number in range(target.sizes.errors):
            await post(client, MISTAKES[number % len(MISTAKES)], out)
