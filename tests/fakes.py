"""Test fakes of the domain's ports, for service-layer tests that run in milliseconds.

`FakeStore` holds what a database would, and its unit of work commits the way the real one
does: every queued write or none, refused when a certificate's stored version is no longer the
one the change read (compare-and-set) or when an idempotency key is taken meanwhile. `FakeCa`
answers as a script says, keeps its first answer per idempotency key, and records every call.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType

from domain.ca import (
    CaDecision,
    CaUnavailable,
    DecisionKind,
    OrderPlaced,
    OrderRequest,
    WithdrawalAnswer,
    WithdrawalReply,
)
from domain.model import (
    Certificate,
    CertificateDocument,
    CertificateEvent,
    CertificateId,
    DnsRecord,
    TenantId,
    Withdrawal,
    WithdrawalId,
)
from domain.ports import KeyedOperation, StatusChange
from domain.service import CertificateService
from domain.statuses import CertificateStatus, CertificateType, DomainType, ValidationMethod

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class FixedClock:
    """Time stands still until a test moves it."""

    def __init__(self, at: datetime = START) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


def bare_certificate(
    status: CertificateStatus,
    type: CertificateType = CertificateType.DV,
    domain_type: DomainType = DomainType.SINGLE,
    domain_quota: int = 1,
    now: datetime = START,
) -> Certificate:
    """A new certificate put straight into `status`, with no history: for tests of the aggregate
    itself, which is all that may skip the lifecycle."""
    certificate = Certificate.create(
        tenant_id=TenantId("t"),
        name="c",
        type=type,
        domain_type=domain_type,
        brand="DigiCert",
        domain_quota=domain_quota,
        validity_years=1,
        now=now,
    )
    certificate.status = status
    certificate.new_events.clear()
    return certificate


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    certificate_id: CertificateId
    withdrawal_id: WithdrawalId


@dataclass
class FakeStore:
    """The committed state, and how commits went."""

    certificates: dict[CertificateId, Certificate] = field(default_factory=dict)
    withdrawals: dict[WithdrawalId, Withdrawal] = field(default_factory=dict)
    events: list[CertificateEvent] = field(default_factory=list)
    keys: dict[tuple[TenantId, KeyedOperation, str], StoredAnswer] = field(default_factory=dict)
    commits: int = 0
    conflicts: int = 0

    def stored(self, certificate_id: str) -> Certificate:
        """The certificate as committed (a copy: changing it changes nothing stored)."""
        return _loaded(self.certificates[CertificateId(certificate_id)])


def _loaded(certificate: Certificate) -> Certificate:
    """What a read returns: a copy of the stored aggregate, with no pending changes."""
    return copy.deepcopy(certificate)


def _stored(certificate: Certificate) -> Certificate:
    kept = copy.deepcopy(certificate)
    kept.new_events = []
    kept.withdrawal_changed = False
    kept.new_document = None
    return kept


class FakeRepository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow
        self._store = uow.store

    async def get(self, tenant_id: TenantId, certificate_id: CertificateId) -> Certificate | None:
        found = await self.get_any_tenant(certificate_id)
        return found if found is not None and found.tenant_id == tenant_id else None

    async def get_any_tenant(self, certificate_id: CertificateId) -> Certificate | None:
        self._uow.reading()
        found = self._store.certificates.get(certificate_id)
        return _loaded(found) if found is not None else None

    async def get_many_any_tenant(
        self, certificate_ids: Sequence[CertificateId]
    ) -> list[Certificate]:
        self._uow.reading()
        return [
            _loaded(self._store.certificates[i])
            for i in certificate_ids
            if i in self._store.certificates
        ]

    async def get_withdrawal(self, withdrawal_id: WithdrawalId) -> Withdrawal | None:
        self._uow.reading()
        return self._store.withdrawals.get(withdrawal_id)

    def add(self, certificate: Certificate) -> None:
        self._uow.queue(certificate, None)

    def save(self, certificate: Certificate, expected_version: int) -> None:
        self._uow.queue(certificate, expected_version)


class FakeIdempotencyKeys:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    async def find(
        self, tenant_id: TenantId, operation: KeyedOperation, key: str
    ) -> StoredAnswer | None:
        self._uow.reading()
        return self._uow.store.keys.get((tenant_id, operation, key))

    def remember(
        self,
        tenant_id: TenantId,
        operation: KeyedOperation,
        key: str,
        certificate_id: CertificateId,
        withdrawal_id: WithdrawalId,
    ) -> None:
        self._uow.keys[(tenant_id, operation, key)] = StoredAnswer(certificate_id, withdrawal_id)


class FakeUnitOfWork:
    def __init__(self, store: FakeStore, *, write: bool) -> None:
        self.store = store
        self.write = write
        self.committed = False
        self.saves: list[tuple[Certificate, int | None]] = []
        self.keys: dict[tuple[TenantId, KeyedOperation, str], StoredAnswer] = {}
        self.certificates = FakeRepository(self)
        self.idempotency = FakeIdempotencyKeys(self)

    def reading(self) -> None:
        assert not self.write, "reads need a unit of work opened for reading"

    def queue(self, certificate: Certificate, expected_version: int | None) -> None:
        assert self.write, "changes need a unit of work opened with write=True"
        self.saves.append((certificate, expected_version))

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.saves.clear()
        self.keys.clear()

    async def commit(self) -> bool:
        store = self.store
        stale = any(
            (stored := store.certificates.get(c.id)) is None or stored.version != expected
            for c, expected in self.saves
            if expected is not None
        ) or any(key in store.keys for key in self.keys)
        if stale:
            store.conflicts += 1
            return False
        for certificate, _ in self.saves:
            store.certificates[certificate.id] = _stored(certificate)
            store.events.extend(certificate.new_events)
            if certificate.withdrawal_changed and certificate.last_withdrawal is not None:
                store.withdrawals[certificate.last_withdrawal.id] = certificate.last_withdrawal
        store.keys.update(self.keys)
        store.commits += 1
        self.committed = True
        return True


class FakeUnitOfWorkFactory:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def __call__(self, *, write: bool = False) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.store, write=write)


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[StatusChange] = []

    async def publish(self, changes: Sequence[StatusChange]) -> None:
        self.published.extend(changes)


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    order_id: str
    key: str


class FakeCa:
    """A CA whose answers the test sets: `reachable`, `withdrawal_reply`, and `hold`, a barrier
    every request waits at (so that concurrent requests all reach the CA before any goes on).

    Like a real CA it acts once per idempotency key: a repeated key gets the first answer."""

    name = "Fake CA"
    supported_types = frozenset(CertificateType)
    supported_methods = frozenset(ValidationMethod)

    def __init__(self, clock: FixedClock) -> None:
        self._clock = clock
        self._orders = itertools.count(1)
        self.reachable = True
        self.retry_after = 30
        self.withdrawal_reply = WithdrawalReply(WithdrawalAnswer.ACCEPTED)
        self.hold: asyncio.Barrier | None = None
        self.calls: list[Call] = []
        self.orders: dict[str, OrderRequest] = {}
        self.answers: dict[str, object] = {}
        self.log: dict[str, list[CaDecision]] = {}

    async def _request(self, method: str, order_id: str, key: str, answer: object) -> object:
        self.calls.append(Call(method, order_id, key))
        if self.hold is not None:
            await self.hold.wait()
        if not self.reachable:
            raise CaUnavailable(retry_after=self.retry_after)
        return self.answers.setdefault(key, answer)

    def asked(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # ---- the port

    async def place_order(self, request: OrderRequest) -> OrderPlaced:
        order_id = next(
            (o for o, r in self.orders.items() if r.reference == request.reference),
            f"order-{next(self._orders)}",
        )
        await self._request("place_order", order_id, request.reference, None)
        self.orders.setdefault(order_id, request)
        self.log.setdefault(order_id, [])
        records = tuple(DnsRecord(f"_acme.{d}", "TXT", order_id) for d in request.domains)
        return OrderPlaced(order_id, records)

    async def request_domain_check(self, order_id: str, *, key: str) -> None:
        await self._request("request_domain_check", order_id, key, None)

    async def add_domains(self, order_id: str, domains: tuple[str, ...], *, key: str) -> None:
        await self._request("add_domains", order_id, key, None)

    async def request_withdrawal(self, order_id: str, *, key: str) -> WithdrawalReply:
        reply = await self._request("request_withdrawal", order_id, key, self.withdrawal_reply)
        assert isinstance(reply, WithdrawalReply)
        return reply

    async def request_revocation(self, order_id: str, reason: str | None, *, key: str) -> None:
        await self._request("request_revocation", order_id, key, None)

    async def request_deletion(self, order_id: str, *, key: str) -> None:
        await self._request("request_deletion", order_id, key, None)

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]:
        if not self.reachable:
            raise CaUnavailable(retry_after=self.retry_after)
        return {
            order_id: [d for d in self.log.get(order_id, ()) if d.seq > cursor]
            for order_id, cursor in cursors.items()
        }

    # ---- the script

    def decide(
        self, order_id: str, kind: DecisionKind, document: CertificateDocument | None = None
    ) -> CaDecision:
        """The CA decides on its own, later; the service learns it from `decisions`."""
        log = self.log[order_id]
        decision = CaDecision(
            order_id, len(log) + 1, kind, self._clock.now(), message=None, document=document
        )
        if kind is DecisionKind.ISSUED:
            decision = replace(decision, issued_at=self._clock.now())
        log.append(decision)
        return decision


@dataclass
class Fakes:
    """The certificate service over fakes of every port."""

    clock: FixedClock = field(default_factory=FixedClock)
    store: FakeStore = field(default_factory=FakeStore)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    ca: FakeCa = field(init=False)
    service: CertificateService = field(init=False)

    def __post_init__(self) -> None:
        self.ca = FakeCa(self.clock)
        self.service = CertificateService(
            FakeUnitOfWorkFactory(self.store), self.ca, self.clock, self.publisher
        )
