"""Domain layer: the ports the domain service needs, implemented by adapters in `server/`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Protocol

from domain.ca import CaDecision, OrderPlaced, OrderRequest, WithdrawalReply
from domain.model import Certificate, CertificateId, TenantId, Withdrawal, WithdrawalId
from domain.statuses import CertificateStatus, CertificateType, ValidationMethod


class Clock(Protocol):
    def now(self) -> datetime: ...


class StoredAnswer(Protocol):
    """What an idempotency key remembers: the certificate and withdrawal of a success."""

    @property
    def certificate_id(self) -> CertificateId: ...

    @property
    def withdrawal_id(self) -> WithdrawalId: ...


class CertificateRepository(Protocol):
    async def get(
        self, tenant_id: TenantId, certificate_id: CertificateId
    ) -> Certificate | None: ...

    async def get_any_tenant(self, certificate_id: CertificateId) -> Certificate | None: ...

    async def get_many_any_tenant(
        self, certificate_ids: Sequence[CertificateId]
    ) -> list[Certificate]: ...

    async def get_withdrawal(self, withdrawal_id: WithdrawalId) -> Withdrawal | None: ...

    def add(self, certificate: Certificate) -> None:
        """Queue a new certificate, written by the unit of work's `commit()`."""
        ...

    def save(self, certificate: Certificate, expected_version: int) -> None:
        """Queue the aggregate's changes, written by `commit()` only if the stored version is
        still `expected_version`."""
        ...


class KeyedOperation(StrEnum):
    """The operations a client may repeat under an idempotency key: each has its own keys."""

    WITHDRAW_APPLICATION = "withdraw_application"


class IdempotencyKeys(Protocol):
    async def find(
        self, tenant_id: TenantId, operation: KeyedOperation, key: str
    ) -> StoredAnswer | None: ...

    def remember(
        self,
        tenant_id: TenantId,
        operation: KeyedOperation,
        key: str,
        certificate_id: CertificateId,
        withdrawal_id: WithdrawalId,
    ) -> None:
        """Queue the answer, stored by `commit()` only if the key is still free."""
        ...


class UnitOfWork(Protocol):
    """One service call's reads, or (opened with `write=True`) its changes, queued on the
    repositories and written in one transaction by `commit()`. Leaving the block without
    `commit()` drops them."""

    @property
    def certificates(self) -> CertificateRepository: ...

    @property
    def idempotency(self) -> IdempotencyKeys: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> bool:
        """Write the queued changes in one transaction; False, with nothing written, when a
        compare-and-set failed or an idempotency key was taken meanwhile."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, write: bool = False) -> UnitOfWork: ...


class CertificateAuthority(Protocol):
    """The CA port. Every method raises `CaUnavailable` when the CA cannot be reached."""

    @property
    def name(self) -> str:
        """How users know this CA, for messages (e.g. "ACME")."""
        ...

    @property
    def supported_types(self) -> frozenset[CertificateType]:
        """The certificate types it issues; the service refuses the others before ordering."""
        ...

    @property
    def supported_methods(self) -> frozenset[ValidationMethod]:
        """The domain validation methods it offers."""
        ...

    async def place_order(self, request: OrderRequest) -> OrderPlaced: ...

    # Each request below carries an idempotency key: a call repeated with the same key (a retry,
    # or another process racing on the same certificate version) gets the first answer again
    # and never acts twice at the CA.

    async def request_domain_check(self, order_id: str, *, key: str) -> None: ...

    async def add_domains(self, order_id: str, domains: tuple[str, ...], *, key: str) -> None: ...

    async def request_withdrawal(self, order_id: str, *, key: str) -> WithdrawalReply: ...

    async def request_revocation(self, order_id: str, reason: str | None, *, key: str) -> None: ...

    async def request_deletion(self, order_id: str, *, key: str) -> None: ...

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]:
        """For each order id, its decisions after the given sequence number, oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A certificate's status changed; subscribers re-read the certificate itself."""

    tenant_id: TenantId
    certificate_id: CertificateId
    previous_status: CertificateStatus | None
    status: CertificateStatus
    changed_at: datetime
    version: int

    @property
    def position(self) -> ChangePosition:
        return ChangePosition(self.changed_at, self.certificate_id, self.version)


@dataclass(frozen=True, slots=True, order=True)
class ChangePosition:
    """Where a status change sits in its tenant's history, which is ordered by the change's
    time, then certificate id and version (a total order): what a subscription cursor holds."""

    changed_at: datetime
    certificate_id: CertificateId
    version: int


class ChangePublisher(Protocol):
    """Tells subscribers about committed status changes."""

    async def publish(self, changes: Sequence[StatusChange]) -> None: ...
