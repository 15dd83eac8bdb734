"""Domain layer: what every use case shares, above all the one shape of a change.

A change reads the certificate, checks the rules, asks the CA (outside any transaction), then
writes with a compare-and-set on `version`. When another writer got there first, the change
starts over from a fresh read, so concurrent requests serialise cleanly. Each CA request
carries an idempotency key made of the certificate, the version read and the operation:
however often it is retried, or by however many processes, the CA acts once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from domain import lifecycle
from domain.ca import CaUnavailable
from domain.model import Certificate, CertificateId, TenantId
from domain.ports import (
    CertificateAuthority,
    ChangePublisher,
    Clock,
    StatusChange,
    UnitOfWork,
    UnitOfWorkFactory,
)
from domain.results import (
    CaUnreachable,
    CertificateChanged,
    ChangeResult,
    InvalidState,
    NotFound,
)
from domain.statuses import CertificateAction

# How often a change re-reads and retries after losing a compare-and-set race.
ATTEMPTS = 20

Reply = TypeVar("Reply")
Done = TypeVar("Done")
# A use case's result type: what its change gives, or why it did not happen.
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class Step(Generic[Reply, Done]):
    """What a change does once its rules pass: ask the CA, if there is anything to ask, then
    change the certificate in the light of the CA's reply (None when nothing was asked);
    `change` returns the outcome to give once the change is saved."""

    change: Callable[[Certificate, Reply | None, datetime], Done]
    # Given the certificate and the request's idempotency key.
    ask_ca: Callable[[Certificate, str], Awaitable[Reply]] | None = None
    # Names the CA request in its idempotency key.
    operation: str = ""
    # Anything else to write in the same transaction (an idempotency key's answer).
    remember: Callable[[UnitOfWork, Done], None] | None = None


def plain_step(
    change: Callable[[Certificate, datetime], None],
    ask_ca: Callable[[Certificate, str], Awaitable[object]] | None = None,
    operation: str = "",
) -> Step[object, ChangeResult]:
    """A step whose change does not depend on what the CA answers."""

    def changed(certificate: Certificate, _reply: object, now: datetime) -> CertificateChanged:
        change(certificate, now)
        return CertificateChanged(certificate)

    return Step(changed, ask_ca, operation)


def order_of(certificate: Certificate) -> str:
    """The CA order of a certificate whose status says the CA holds its application."""
    assert certificate.ca_order_id is not None
    return certificate.ca_order_id


def status_changes(certificate: Certificate) -> list[StatusChange]:
    return [
        StatusChange(
            tenant_id=certificate.tenant_id,
            certificate_id=certificate.id,
            previous_status=event.from_status,
            status=event.to_status,
            changed_at=event.at,
            version=event.version,
        )
        for event in certificate.new_events
        if event.from_status is not event.to_status
    ]


def refuse(certificate: Certificate, action: CertificateAction, verb: str) -> InvalidState:
    return InvalidState(certificate, lifecycle.ACTION_STATUSES[action], verb)


class UseCase:
    """The ports every use case talks to, and the steps they all take."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        ca: CertificateAuthority,
        clock: Clock,
        publisher: ChangePublisher,
    ) -> None:
        self._uow = uow
        self._ca = ca
        self._clock = clock
        self._publisher = publisher

    async def _save(
        self,
        certificate: Certificate,
        expected_version: int,
        also: Callable[[UnitOfWork], None] | None = None,
    ) -> bool:
        """Write the certificate's changes if its stored version is still `expected_version`
        (and whatever `also` queues, in the same transaction); False when another writer won."""
        async with self._uow(write=True) as uow:
            uow.certificates.save(certificate, expected_version)
            if also is not None:
                also(uow)
            if not await uow.commit():
                return False
        await self._publisher.publish(status_changes(certificate))
        return True

    @staticmethod
    def _ca_key(certificate: Certificate, operation: str) -> str:
        """The idempotency key of a CA request: one per certificate version and operation, so
        a retry, or another process racing on the same version, never acts twice at the CA."""
        return f"{certificate.id}:{certificate.version}:{operation}"

    async def _change(
        self,
        tenant_id: TenantId,
        certificate_id: str,
        rules: Callable[[Certificate], Awaitable[Step[Any, Result] | Result]],
        read: Callable[[UnitOfWork], Awaitable[Certificate | Result | None]] | None = None,
    ) -> Result | NotFound | CaUnreachable:
        """The shape of every change: read, rules, the CA's consent, then compare-and-set.

        `read` replaces the plain read of the certificate, when a use case has something to
        answer before the rules (a remembered answer, say)."""
        for _ in range(ATTEMPTS):
            found: Certificate | Result | None
            async with self._uow() as uow:
                if read is None:
                    found = await uow.certificates.get(tenant_id, CertificateId(certificate_id))
                else:
                    found = await read(uow)
            if found is None:
                return NotFound(certificate_id)
            if not isinstance(found, Certificate):
                return found
            certificate = found
            step = await rules(certificate)
            if not isinstance(step, Step):
                return step
            reply = None
            if step.ask_ca is not None:
                key = self._ca_key(certificate, step.operation)
                try:
                    reply = await step.ask_ca(certificate, key)
                except CaUnavailable as error:
                    return CaUnreachable(error.retry_after)
            expected = certificate.version
            done = step.change(certificate, reply, self._clock.now())
            if await self._save(certificate, expected, _remembering(step, done)):
                return done
        raise RuntimeError("too much contention on one certificate")


def _remembering(step: Step[Reply, Done], done: Done) -> Callable[[UnitOfWork], None] | None:
    remember = step.remember
    if remember is None:
        return None
    return lambda uow: remember(uow, done)
