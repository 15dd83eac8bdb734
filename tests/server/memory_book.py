"""Test helper: an in-memory order book for the simulated CA, to check its request keys
without a database (tests/server/test_ca_idempotency.py runs it beside the SQL book)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from domain.ca import CaDecision, CaUnavailable
from server.ca.orders import SimOrder
from server.ca.x509 import TestRoot

T = TypeVar("T")


@dataclass(slots=True)
class AnsweredRequest:
    """A keyed request the CA answered (what the `simca_requests` table holds in SQL)."""

    order_id: str
    operation: str
    answer: dict[str, Any]
    calls: int
    created_at: datetime


class MemoryOrderBook:
    def __init__(self) -> None:
        self.orders: dict[str, SimOrder] = {}
        self.log: dict[str, list[CaDecision]] = {}
        self.requests: dict[str, AnsweredRequest] = {}
        self.is_reachable = True
        self.test_root: TestRoot | None = None
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

    async def change(self, order_id: str, change: Callable[[SimOrder], T]) -> T | None:
        async with self._locked(order_id) as order:
            return None if order is None else change(order)

    @asynccontextmanager
    async def _locked(self, order_id: str) -> AsyncIterator[SimOrder | None]:
        async with self._lock:
            stored = self.orders.get(order_id)
            if stored is None:
                yield None
                return
            order = stored.copy()
            yield order
            self.log[order_id].extend(order.new_decisions)
            self.orders[order_id] = order.copy()

    async def keyed_request(
        self,
        order_id: str,
        key: str,
        operation: str,
        act: Callable[[SimOrder], dict[str, Any]],
        now: datetime,
    ) -> dict[str, Any] | None:
        if not self.is_reachable:
            raise CaUnavailable()
        async with self._locked(order_id) as order:
            if order is None:
                return None
            stored = self.requests.get(key)
            if stored is not None:
                stored.calls += 1
                return dict(stored.answer)
            answer = act(order)
            self.requests[key] = AnsweredRequest(order_id, operation, dict(answer), 1, now)
            return answer

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

    async def root(self, candidate: TestRoot) -> TestRoot:
        if self.test_root is None:
            self.test_root = candidate
        return self.test_root
