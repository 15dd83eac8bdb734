"""Server layer: an in-memory order book for the simulated CA, for fast tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from domain.ca import CaDecision
from server.ca.orders import SimOrder


class MemoryOrderBook:
    def __init__(self) -> None:
        self.orders: dict[str, SimOrder] = {}
        self.log: dict[str, list[CaDecision]] = {}
        self.is_reachable = True
        self._lock = asyncio.Lock()

    async def reachable(self) -> bool:
        return self.is_reachable

    async def set_reachable(self, flag: bool) -> None:
        self.is_reachable = flag

    async def place(self, order: SimOrder) -> SimOrder:
        async with self._lock:
            for existing in self.orders.values():
                if existing.reference == order.reference:
                    return existing.copy()
            self.orders[order.id] = order.copy()
            self.log[order.id] = []
            return order

    @asynccontextmanager
    async def locked(self, order_id: str) -> AsyncIterator[SimOrder | None]:
        async with self._lock:
            stored = self.orders.get(order_id)
            if stored is None:
                yield None
                return
            order = stored.copy()
            yield order
            self.log[order_id].extend(order.new_decisions)
            self.orders[order_id] = order.copy()

    async def decisions(self, cursors: dict[str, int]) -> dict[str, Sequence[CaDecision]]:
        return {
            order_id: [d for d in self.log.get(order_id, ()) if d.seq > cursor]
            for order_id, cursor in cursors.items()
        }

    async def due_reviews(self, started_before: datetime, limit: int) -> list[str]:
        due = [
            o.id
            for o in self.orders.values()
            if o.review_started_at is not None and o.review_started_at <= started_before
        ]
        return due[:limit]
