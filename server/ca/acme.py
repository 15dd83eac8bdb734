"""Server layer: a real certificate authority over ACME (RFC 8555), behind the CA port.

How the port maps onto the protocol:

    place_order           a new order for the domains (CSR from a key certgraph makes and keeps);
                          each authorization's dns-01 challenge gives a TXT record to publish
    request_domain_check  answer the pending dns-01 challenges
    decisions             poll the orders certgraph follows: `ready` is finalized with the CSR,
                          `valid` downloads the chain and logs ISSUED, `invalid` logs a rejection
    add_domains           a new order for all the domains replaces the old one (ACME orders are
                          fixed); the old one's authorizations are deactivated
    request_withdrawal    deactivate the authorizations (section 7.5.2): the order turns invalid
                          and the poll logs WITHDRAWAL_APPROVED; once finalized it is too late
    request_revocation    revokeCert, answered at once
    request_deletion      like a withdrawal while under application; an issued one is forgotten

ACME CAs issue domain-validated certificates only, checked over DNS here.

Requests are idempotent through the order's recorded phase rather than the port's keys: a
repeated withdrawal finds the order closing and answers ACCEPTED again, a repeated revocation
finds it revoked, a repeated addition finds the domains in the order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from domain.ca import (
    CaDecision,
    CaUnavailable,
    DecisionKind,
    OrderPlaced,
    OrderRequest,
    WithdrawalAnswer,
    WithdrawalReply,
)
from domain.model import new_id
from domain.statuses import CertificateType, ValidationMethod
from server.ca.acme_book import FOLLOWED, AcmeOrder, AcmeOrderBook, Closing, Entry, Phase
from server.ca.acme_client import AcmeAccount, AcmeClient, AcmeProblem
from server.ca.x509 import csr_pem, document_from_pem, new_private_key_pem
from server.persistence.database import Database
from server.settings import Settings

log = logging.getLogger(__name__)
D = DecisionKind
# How often a request re-reads an order after losing a race with another writer.
ATTEMPTS = 10
# A withdrawal that finds the order being issued waits this long for the certificate.
ISSUE_WAIT_SECONDS = 10.0
ISSUE_POLL_SECONDS = 0.25
DEAD = frozenset({"invalid", "deactivated", "revoked"})
ISSUED_MESSAGE = "The ACME server validated the domains and issued the certificate."


class AcmeCa:
    """Implements `domain.ports.CertificateAuthority` for an ACME server."""

    name = "ACME"
    supported_types = frozenset({CertificateType.DV})
    supported_methods = frozenset({ValidationMethod.DNS})

    def __init__(
        self, client: AcmeClient, book: AcmeOrderBook, clock: Callable[[], datetime]
    ) -> None:
        self._client = client
        self._book = book
        self._clock = clock

    async def _get(self, order_id: str) -> AcmeOrder:
        order = await self._book.get(order_id)
        if order is None:
            raise CaUnavailable(f"certgraph has no ACME order {order_id}.")
        return order

    async def _save(self, order: AcmeOrder, was: AcmeOrder, *entries: Entry) -> bool:
        return await self._book.save(order, was=was, entries=entries, now=self._clock())

    async def _place(self, domains: tuple[str, ...]) -> AcmeOrder:
        """A new ACME order with a new key, as certgraph records it (without its ids yet)."""
        key = new_private_key_pem()
        csr = csr_pem(key, domains)
        try:
            placed = await self._client.new_order(csr)
        except AcmeProblem as problem:
            # The port has no refusal for an order; the user sees the CA as unavailable.
            log.warning("ACME server refused an order for %s: %s", domains, problem)
            raise CaUnavailable(f"The ACME server refused the order: {problem.detail}") from None
        now = self._clock()
        order = AcmeOrder(
            id="",
            reference="",
            url=placed.url,
            finalize_url=placed.finalize_url,
            authorizations=tuple(a.url for a in placed.authorizations),
            domains=domains,
            records=tuple(a.record for a in placed.authorizations if a.record is not None),
            private_key_pem=key,
            csr_pem=csr,
            phase=Phase.OPEN,
            created_at=now,
            updated_at=now,
        )
        return order

    # ---- the CA port

    async def place_order(self, request: OrderRequest) -> OrderPlaced:
        existing = await self._book.by_reference(request.reference)
        if existing is None:
            order = replace(await self._place(request.domains), id=new_id())
            existing = await self._book.add(replace(order, reference=request.reference))
            if existing.id != order.id:
                # A concurrent retry stored its order first: this one is not needed.
                await self._abandon(order.authorizations, keep=existing.authorizations)
        return OrderPlaced(existing.id, existing.records)

    async def request_domain_check(self, order_id: str, *, key: str) -> None:
        order = await self._get(order_id)
        # Recorded first: from now on the poll follows the order (see `decisions`).
        while order.phase is Phase.OPEN and order.answered_at is None:
            if await self._save(replace(order, answered_at=self._clock()), order):
                break
            order = await self._get(order_id)
        if order.phase is not Phase.OPEN:
            return
        try:
            await self._client.answer_challenges(order.authorizations)
        except AcmeProblem as problem:
            # The poll reads the authorizations and reports what became of them.
            log.warning("ACME order %s: answering its challenges failed: %s", order_id, problem)

    async def add_domains(self, order_id: str, domains: tuple[str, ...], *, key: str) -> None:
        for _ in range(ATTEMPTS):
            order = await self._get(order_id)
            if set(domains) <= set(order.domains):
                return  # a repeated request: its order is in place already
            if order.phase is not Phase.OPEN:
                if await self._save(
                    order,
                    order,
                    Entry(
                        D.ADDITION_REJECTED,
                        "The ACME order is past validation; the domains cannot be added.",
                    ),
                ):
                    return
                continue
            fresh = await self._place(order.domains + domains)
            replaced = replace(
                fresh, id=order.id, reference=order.reference, created_at=order.created_at
            )
            if await self._save(
                replaced, order, Entry(D.ADDITION_APPROVED, records=replaced.records)
            ):
                await self._abandon(order.authorizations, keep=replaced.authorizations)
                return
            await self._abandon(replaced.authorizations, keep=())
        raise RuntimeError("too much contention on one ACME order")

    async def _abandon(self, authorizations: tuple[str, ...], keep: tuple[str, ...]) -> None:
        """Deactivate authorizations no order needs any more; they would expire anyway."""
        try:
            await self._client.deactivate(tuple(a for a in authorizations if a not in keep))
        except (AcmeProblem, CaUnavailable) as error:
            log.info("left ACME authorizations to expire: %s", error)

    async def request_withdrawal(self, order_id: str, *, key: str) -> WithdrawalReply:
        for _ in range(ATTEMPTS):
            order = await self._get(order_id)
            if order.phase is Phase.OPEN:
                closing = replace(order, phase=Phase.CLOSING, closing_for=Closing.WITHDRAWAL)
                if await self._save(closing, order):
                    await self._deactivate(closing)
                    return WithdrawalReply(WithdrawalAnswer.ACCEPTED)
            elif order.phase is Phase.CLOSING:
                await self._deactivate(order)
                return WithdrawalReply(WithdrawalAnswer.ACCEPTED)
            elif order.phase is Phase.FINALIZING:
                await self._wait_for_issue(order)
            elif order.phase is Phase.ISSUED:
                assert order.certificate_pem is not None
                document = document_from_pem(order.certificate_pem)
                return WithdrawalReply(
                    WithdrawalAnswer.ALREADY_ISSUED, document.not_before, document
                )
            elif order.closing_for is Closing.WITHDRAWAL:
                return WithdrawalReply(WithdrawalAnswer.ACCEPTED)
            elif await self._save(
                replace(order, closing_for=Closing.WITHDRAWAL),
                order,
                Entry(D.WITHDRAWAL_APPROVED, "Nothing was left to withdraw at the ACME server."),
            ):
                # The order had failed already: withdrawing what the CA refused succeeds.
                return WithdrawalReply(WithdrawalAnswer.ACCEPTED)
        raise RuntimeError("too much contention on one ACME order")

    async def _deactivate(self, order: AcmeOrder) -> None:
        try:
            await self._client.deactivate(order.authorizations)
        except AcmeProblem as problem:
            # E.g. one already invalid: the poll reads the order's status and decides.
            log.warning("ACME order %s: deactivation refused: %s", order.id, problem)

    async def _wait_for_issue(self, order: AcmeOrder) -> None:
        """The certificate is being issued: wait (briefly) for the order to settle."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ISSUE_WAIT_SECONDS
        while order.phase is Phase.FINALIZING:
            if loop.time() > deadline:
                raise CaUnavailable("The ACME server is still issuing; ask again.", retry_after=5)
            await self._follow(order)
            order = await self._get(order.id)
            if order.phase is Phase.FINALIZING:
                await asyncio.sleep(ISSUE_POLL_SECONDS)

    async def request_revocation(self, order_id: str, reason: str | None, *, key: str) -> None:
        for _ in range(ATTEMPTS):
            order = await self._get(order_id)
            if order.closing_for is Closing.REVOCATION:
                return
            if order.phase is not Phase.ISSUED or order.certificate_pem is None:
                if await self._save(
                    order, order, Entry(D.REVOCATION_REJECTED, "Nothing issued to revoke.")
                ):
                    return
                continue
            entry = Entry(D.REVOCATION_APPROVED)
            try:
                await self._client.revoke(order.certificate_pem)
            except AcmeProblem as problem:
                if problem.code != "alreadyRevoked":
                    if await self._save(order, order, Entry(D.REVOCATION_REJECTED, problem.detail)):
                        return
                    continue
                entry = Entry(D.REVOCATION_APPROVED, "The certificate was already revoked.")
            revoked = replace(order, phase=Phase.CLOSED, closing_for=Closing.REVOCATION)
            if await self._save(revoked, order, entry):
                return
        raise RuntimeError("too much contention on one ACME order")

    async def request_deletion(self, order_id: str, *, key: str) -> None:
        for _ in range(ATTEMPTS):
            order = await self._get(order_id)
            if order.closing_for is Closing.DELETION:
                if order.phase is Phase.CLOSING:
                    await self._deactivate(order)
                return
            if order.phase in (Phase.OPEN, Phase.CLOSING):
                closing = replace(order, phase=Phase.CLOSING, closing_for=Closing.DELETION)
                if await self._save(closing, order):
                    await self._deactivate(closing)
                    return
            elif order.phase is Phase.FINALIZING:
                # Issued or not, the poll then logs the deletion instead.
                if await self._save(replace(order, closing_for=Closing.DELETION), order):
                    return
            elif await self._save(
                replace(order, phase=Phase.CLOSED, closing_for=Closing.DELETION),
                order,
                Entry(D.DELETION_APPROVED, "certgraph forgets it; the CA was not asked."),
            ):
                return
        raise RuntimeError("too much contention on one ACME order")

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]:
        for order in await self._book.many(list(cursors)):
            # An order whose challenges nobody answered yet can only expire: asking about it
            # every poll would spend the CA's rate limit for nothing.
            waiting = order.phase is Phase.OPEN and order.answered_at is None
            if order.phase in FOLLOWED and not waiting:
                try:
                    await self._follow(order)
                except AcmeProblem as problem:
                    log.warning("ACME order %s: polling refused: %s", order.id, problem)
        return await self._book.decisions(cursors)

    # ---- following an order at the ACME server

    async def _follow(self, order: AcmeOrder) -> None:
        """Read the order's status and log what changed (compare-and-set: once, whoever polls)."""
        view = await self._client.order(order.url)
        if order.phase is Phase.CLOSING:
            if view.status not in DEAD:
                await self._deactivate(order)
                view = await self._client.order(order.url)
            if view.status in DEAD:
                kind = D.DELETION_APPROVED if order.closing_for is Closing.DELETION else None
                await self._save(
                    replace(order, phase=Phase.CLOSED),
                    order,
                    Entry(kind or D.WITHDRAWAL_APPROVED, "The ACME order is now invalid."),
                )
            return
        if order.phase is Phase.OPEN:
            if view.status == "pending":
                return
            if view.status in DEAD:
                await self._close_rejected(order, view.error)
                return
            finalizing = replace(order, phase=Phase.FINALIZING)
            if not await self._save(finalizing, order):
                return
            order = finalizing
        # FINALIZING
        if view.status == "ready":
            try:
                await self._client.finalize(order.url, order.finalize_url, order.csr_pem)
            except AcmeProblem as problem:
                if problem.code != "orderNotReady":
                    log.warning("ACME order %s: finalization refused: %s", order.id, problem)
            view = await self._client.order(order.url)
        if view.status == "valid" and view.certificate_url:
            chain = await self._client.download(view.certificate_url)
            if order.closing_for is Closing.DELETION:
                entry = Entry(D.DELETION_APPROVED, "Issued meanwhile; certgraph forgets it.")
                done = replace(order, phase=Phase.CLOSED, certificate_pem=chain)
            else:
                entry = Entry(D.ISSUED, ISSUED_MESSAGE, certificate_pem=chain)
                done = replace(order, phase=Phase.ISSUED, certificate_pem=chain)
            await self._save(done, order, entry)
        elif view.status in DEAD:
            await self._close_rejected(order, view.error)

    async def _close_rejected(self, order: AcmeOrder, error: str | None) -> None:
        if order.closing_for is Closing.DELETION:
            entry = Entry(D.DELETION_APPROVED, "The ACME order is now invalid.")
        else:
            entry = Entry(D.DOMAIN_CHECK_REJECTED, await self._failure(order, error))
        await self._save(replace(order, phase=Phase.CLOSED), order, entry)

    async def _failure(self, order: AcmeOrder, error: str | None) -> str:
        """Why the ACME server refused: a failed challenge (naming its domain), else the order's
        own error."""
        for authorization in await self._client.authorizations(order.authorizations):
            if authorization.error:
                return f"{authorization.domain}: {authorization.error}"
            if authorization.status in DEAD and not error:
                return f"{authorization.domain}: the authorization is {authorization.status}."
        return error or "The ACME server marked the order invalid."


def build_acme_ca(settings: Settings, db: Database, clock: Callable[[], datetime]) -> AcmeCa:
    """The ACME CA the settings describe; a ValueError says which setting is missing."""
    missing = [
        f"CERTGRAPH_{name.upper()}"
        for name in ("acme_directory_url", "acme_account_key_file")
        if getattr(settings, name) is None
    ]
    if missing:
        raise ValueError(f"CERTGRAPH_CA=acme needs {' and '.join(missing)}")
    if not settings.acme_agree_terms:
        raise ValueError(
            "CERTGRAPH_CA=acme registers an account, which accepts the CA's terms of service "
            "(the directory's meta.termsOfService): read them, then set "
            "CERTGRAPH_ACME_AGREE_TERMS=1"
        )
    assert settings.acme_directory_url is not None and settings.acme_account_key_file is not None
    account = AcmeAccount(
        directory_url=settings.acme_directory_url,
        key_file=settings.acme_account_key_file,
        contact_email=settings.acme_contact_email,
        ca_bundle=settings.acme_ca_bundle,
    )
    return AcmeCa(AcmeClient(account), AcmeOrderBook(db), clock)
