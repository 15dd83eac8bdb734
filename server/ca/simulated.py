"""Server layer: the simulated CA, an embedded certificate authority behind the CA port.

It keeps its own order book (durable in SQL, or in memory for fast tests), answers requests at
once, decides on reviews later (by itself after `auto_decide_seconds`, or when the sandbox
tells it), and reports decisions only when asked, as a real CA would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from domain.ca import (
    CaDecision,
    CaUnavailable,
    OrderPlaced,
    OrderRequest,
    WithdrawalAnswer,
    WithdrawalReply,
)
from domain.sandbox import SandboxDecision
from domain.statuses import CertificateType, ValidationMethod
from server.ca.orders import SimOrder
from server.ca.x509 import TestRoot, document_from_pem

log = logging.getLogger(__name__)
T = TypeVar("T")

# A request's effect on an order; its answer, if any, is the caller's business.
OrderChange = Callable[[SimOrder], object]


def reply_to_json(reply: WithdrawalReply) -> dict[str, Any]:
    """A withdrawal answer as the CA stores it under the request's idempotency key."""
    return {
        "answer": reply.answer.value,
        "issued_at": reply.issued_at.isoformat() if reply.issued_at else None,
        "certificate_pem": reply.document.pem if reply.document else None,
    }


def reply_from_json(data: dict[str, Any]) -> WithdrawalReply:
    issued_at, pem = data.get("issued_at"), data.get("certificate_pem")
    return WithdrawalReply(
        WithdrawalAnswer(data["answer"]),
        datetime.fromisoformat(issued_at) if issued_at else None,
        document_from_pem(pem) if pem else None,
    )


class OrderBook(Protocol):
    async def reachable(self) -> bool: ...

    async def set_reachable(self, flag: bool) -> None: ...

    async def place(self, order: SimOrder) -> SimOrder:
        """Store a new order, or return the one already placed under its reference."""
        ...

    async def change(self, order_id: str, change: Callable[[SimOrder], T]) -> T | None:
        """Apply `change` to the order, exclusively, and store what it changed and the new
        decisions it logged (one transaction); returns what `change` returned, or None when
        there is no such order. `change` may run more than once, on a fresh copy each time."""
        ...

    async def keyed_request(
        self,
        order_id: str,
        key: str,
        operation: str,
        act: Callable[[SimOrder], dict[str, Any]],
        now: datetime,
    ) -> dict[str, Any] | None:
        """Answer a request once per idempotency key. The first time, `act` changes the order
        and its answer is stored with the change (one transaction); a key seen before gets
        the stored answer and leaves the order alone. Either way the key's call count goes
        up. None when there is no such order; `CaUnavailable` (and nothing changed) while the
        CA is unreachable, checked in the same transaction."""
        ...

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]: ...

    async def due_reviews(self, started_before: datetime, limit: int) -> list[str]: ...

    async def root(self, candidate: TestRoot) -> TestRoot:
        """The CA's test root: `candidate` is stored unless one already is, which wins."""
        ...


class SimulatedCa:
    """Implements `domain.ports.CertificateAuthority`, plus the sandbox controls."""

    name = "The simulated CA"
    supported_types = frozenset(CertificateType)
    supported_methods = frozenset(ValidationMethod)

    def __init__(
        self,
        book: OrderBook,
        clock: Callable[[], datetime],
        auto_decide_seconds: float = 0,
    ) -> None:
        self.book = book
        self._clock = clock
        self.auto_decide_seconds = auto_decide_seconds
        self._root: TestRoot | None = None

    async def _check(self) -> None:
        if not await self.book.reachable():
            raise CaUnavailable()

    # ---- the CA port

    async def place_order(self, request: OrderRequest) -> OrderPlaced:
        await self._check()
        order = await self.book.place(SimOrder.place(request, self._clock()))
        return OrderPlaced(order.id, order.records)

    async def _request(
        self, order_id: str, key: str, operation: str, act: Callable[[SimOrder], dict[str, Any]]
    ) -> dict[str, Any]:
        answer = await self.book.keyed_request(order_id, key, operation, act, self._clock())
        if answer is None:
            raise CaUnavailable(f"The CA does not know order {order_id}.")
        return answer

    async def _act(self, order_id: str, key: str, operation: str, change: OrderChange) -> None:
        def act(order: SimOrder) -> dict[str, Any]:
            change(order)
            return {}

        await self._request(order_id, key, operation, act)

    async def request_domain_check(self, order_id: str, *, key: str) -> None:
        await self._act(
            order_id, key, "domain-check", lambda o: o.request_domain_check(self._clock())
        )

    async def add_domains(self, order_id: str, domains: tuple[str, ...], *, key: str) -> None:
        await self._act(
            order_id, key, "add-domains", lambda o: o.add_domains(domains, self._clock())
        )

    async def request_withdrawal(self, order_id: str, *, key: str) -> WithdrawalReply:
        answer = await self._request(
            order_id,
            key,
            "withdrawal",
            lambda o: reply_to_json(o.request_withdrawal(self._clock())),
        )
        return reply_from_json(answer)

    async def request_revocation(self, order_id: str, reason: str | None, *, key: str) -> None:
        await self._act(order_id, key, "revocation", lambda o: o.request_revocation(self._clock()))

    async def request_deletion(self, order_id: str, *, key: str) -> None:
        await self._act(order_id, key, "deletion", lambda o: o.request_deletion(self._clock()))

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]:
        await self._check()
        return await self.book.decisions(cursors)

    # ---- the sandbox and the CA's own clockwork

    async def _signer(self) -> TestRoot:
        if self._root is None:
            self._root = await self.book.root(TestRoot.create(self._clock()))
        return self._root

    async def root_pem(self) -> str:
        """The test root's certificate, which every certificate this CA issues chains to."""
        return (await self._signer()).certificate_pem

    async def decide(self, order_id: str, decision: SandboxDecision) -> bool:
        sign = (await self._signer()).issue
        decided = await self.book.change(
            order_id, lambda order: order.decide(decision, self._clock(), sign)
        )
        return decided is True

    async def set_reachable(self, flag: bool) -> None:
        await self.book.set_reachable(flag)

    async def decide_due(self, limit: int = 100) -> int:
        """Approve every review that has waited `auto_decide_seconds`; returns how many."""
        if self.auto_decide_seconds <= 0:
            return 0
        before = self._clock() - timedelta(seconds=self.auto_decide_seconds)
        sign = (await self._signer()).issue

        def approve_if_due(order: SimOrder) -> bool:
            # Re-checked under the lock: another process may have decided meanwhile.
            return (
                order.review_started_at is not None
                and order.review_started_at <= before
                and order.decide(SandboxDecision.APPROVE, self._clock(), sign)
            )

        decided = 0
        for order_id in await self.book.due_reviews(before, limit):
            if await self.book.change(order_id, approve_if_due):
                decided += 1
        return decided

    async def run_auto_decide(self, interval: float) -> None:
        while True:
            try:
                await self.decide_due()
            except Exception:
                log.exception("simulated CA: auto-decide round failed")
            await asyncio.sleep(interval)
