"""Server layer: the simulated CA, an embedded certificate authority behind the CA port.

It keeps its own order book (durable in SQL, or in memory for fast tests), answers requests at
once, decides on reviews later (by itself after `auto_decide_seconds`, or when the sandbox
tells it), and reports decisions only when asked, as a real CA would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

from domain.ca import CaDecision, CaUnavailable, OrderPlaced, OrderRequest, WithdrawalReply
from domain.service import SandboxDecision
from server.ca.orders import SimOrder

log = logging.getLogger(__name__)


class OrderBook(Protocol):
    async def reachable(self) -> bool: ...

    async def set_reachable(self, flag: bool) -> None: ...

    async def place(self, order: SimOrder) -> SimOrder:
        """Store a new order, or return the one already placed under its reference."""
        ...

    def locked(self, order_id: str) -> AbstractAsyncContextManager[SimOrder | None]:
        """The order, exclusively; its changes and new decisions are stored on exit."""
        ...

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]: ...

    async def due_reviews(self, started_before: datetime, limit: int) -> list[str]: ...


class SimulatedCa:
    """Implements `domain.ports.CertificateAuthority`, plus the sandbox controls."""

    def __init__(
        self,
        book: OrderBook,
        clock: Callable[[], datetime],
        auto_decide_seconds: float = 0,
    ) -> None:
        self.book = book
        self._clock = clock
        self.auto_decide_seconds = auto_decide_seconds

    async def _check(self) -> None:
        if not await self.book.reachable():
            raise CaUnavailable()

    # ---- the CA port

    async def place_order(self, request: OrderRequest) -> OrderPlaced:
        await self._check()
        order = await self.book.place(SimOrder.place(request, self._clock()))
        return OrderPlaced(order.id, order.records)

    async def _with_order(self, order_id: str, change: Callable[[SimOrder], object]) -> object:
        await self._check()
        async with self.book.locked(order_id) as order:
            if order is None:
                raise CaUnavailable(f"The CA does not know order {order_id}.")
            return change(order)

    async def request_domain_check(self, order_id: str) -> None:
        await self._with_order(order_id, lambda o: o.request_domain_check(self._clock()))

    async def add_domains(self, order_id: str, domains: tuple[str, ...]) -> None:
        await self._with_order(order_id, lambda o: o.add_domains(domains, self._clock()))

    async def request_withdrawal(self, order_id: str) -> WithdrawalReply:
        reply = await self._with_order(order_id, lambda o: o.request_withdrawal(self._clock()))
        assert isinstance(reply, WithdrawalReply)
        return reply

    async def request_revocation(self, order_id: str, reason: str | None) -> None:
        await self._with_order(order_id, lambda o: o.request_revocation(self._clock()))

    async def request_deletion(self, order_id: str) -> None:
        await self._with_order(order_id, lambda o: o.request_deletion(self._clock()))

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]:
        await self._check()
        return await self.book.decisions(cursors)

    # ---- the sandbox and the CA's own clockwork

    async def decide(self, order_id: str, decision: SandboxDecision) -> bool:
        async with self.book.locked(order_id) as order:
            return order is not None and order.decide(decision, self._clock())

    async def set_reachable(self, flag: bool) -> None:
        await self.book.set_reachable(flag)

    async def decide_due(self, limit: int = 100) -> int:
        """Approve every review that has waited `auto_decide_seconds`; returns how many."""
        if self.auto_decide_seconds <= 0:
            return 0
        before = self._clock() - timedelta(seconds=self.auto_decide_seconds)
        decided = 0
        for order_id in await self.book.due_reviews(before, limit):
            async with self.book.locked(order_id) as order:
                # Re-check under the lock: another process may have decided meanwhile.
                if (
                    order is not None
                    and order.review_started_at is not None
                    and order.review_started_at <= before
                    and order.decide(SandboxDecision.APPROVE, self._clock())
                ):
                    decided += 1
        return decided

    async def run_auto_decide(self, interval: float) -> None:
        while True:
            try:
                await self.decide_due()
            except Exception:
                log.exception("simulated CA: auto-decide round failed")
            await asyncio.sleep(interval)
