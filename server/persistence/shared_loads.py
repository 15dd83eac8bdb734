"""Server layer: loads by key made in one turn of the event loop share one query."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import RowMapping

# One query reads this many keys at most; later loads in the same turn start another.
MAX_SHARED_KEYS = 500

Scope = TypeVar("Scope", bound=Hashable)


@dataclass
class _SharedLoad:
    keys: set[str] = field(default_factory=set)
    rows: asyncio.Future[Sequence[RowMapping]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SharedLoads(Generic[Scope]):
    """Loads by key made in one turn of the event loop share one query, per scope (a tenant,
    say): a DataLoader without a cache, across callers. The query runs after the turn in which
    the first load was made, so every caller gets rows read after it asked, never older ones.

    `fetch(scope, keys)` returns the rows of those keys; `key_column` names the column that
    tells which key a row belongs to.
    """

    def __init__(
        self,
        fetch: Callable[[Scope, list[str]], Awaitable[Sequence[RowMapping]]],
        key_column: str = "id",
    ) -> None:
        self._fetch = fetch
        self._key_column = key_column
        self._open: dict[Scope, _SharedLoad] = {}
        # The event loop keeps only weak references to tasks.
        self._running: set[asyncio.Task[None]] = set()

    async def load(self, scope: Scope, keys: Sequence[str]) -> list[RowMapping]:
        shared = self._open.get(scope)
        if shared is None or len(shared.keys) >= MAX_SHARED_KEYS:
            shared = self._open[scope] = _SharedLoad()
            # A task's first step runs after the callbacks already due in this turn.
            task = asyncio.create_task(self._run(scope, shared))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        shared.keys.update(keys)
        # Shielded: one caller giving up must not cancel the others' query.
        rows = await asyncio.shield(shared.rows)
        wanted = set(keys)
        return [row for row in rows if row[self._key_column] in wanted]

    async def _run(self, scope: Scope, shared: _SharedLoad) -> None:
        if self._open.get(scope) is shared:
            del self._open[scope]
        try:
            shared.rows.set_result(await self._fetch(scope, sorted(shared.keys)))
        except Exception as error:
            shared.rows.set_exception(error)
            # Retrieved here so that an error nobody waits for any more is not reported.
            shared.rows.exception()
