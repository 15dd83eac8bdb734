"""Server layer: status changes between processes, over PostgreSQL LISTEN/NOTIFY.

Each process announces its committed changes with `NOTIFY certgraph_changes` (ids only) and
LISTENs on one dedicated connection. Whatever it hears, its own changes included, it re-reads
from `certificate_events` and hands to its local `Broker`: so every subscriber of every process
hears every change, and a process's own changes reach its own subscribers exactly once.

When the listening connection drops, the process reconnects with backoff, then re-reads the
changes recorded since shortly before the drop and delivers those it had not delivered yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg
from prometheus_client import Counter
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from domain.model import CertificateId, TenantId
from domain.ports import ChangePosition, Clock, StatusChange
from server.events.broker import REPLAY_PAGE, Broker
from server.persistence.changes import ChangeKey, SqlChangeHistory
from server.persistence.database import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL = "certgraph_changes"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
# The listening connections' name in pg_stat_activity: one per serving process.
LISTENER_NAME = "certgraph-listen"
# How often the idle listening connection is checked (a half-open TCP connection is silent).
KEEPALIVE_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 10.0
# Changes are stamped before their transaction commits: after a drop, re-read from this much
# before the last moment the connection was known to be good.
CATCH_UP_MARGIN = timedelta(seconds=30)
# Recently delivered changes, so a catch-up never delivers one twice.
REMEMBERED = 50_000
# Notifications re-read in one query.
BATCH = 500
DELIVERY_ATTEMPTS = 6


def notification(change: StatusChange) -> str:
    """The NOTIFY payload: ids only; listeners read the change itself from the database."""
    return json.dumps(
        {
            "tenant": change.tenant_id,
            "certificate": change.certificate_id,
            "version": change.version,
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True, slots=True)
class Heard:
    tenant_id: TenantId
    key: ChangeKey


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Re-read what was recorded since `since`: notifications may have been missed."""

    since: datetime


class PgChangePublisher:
    """Implements the domain's `ChangePublisher` across processes; `run()` listens."""

    def __init__(
        self, db: Database, broker: Broker, history: SqlChangeHistory, clock: Clock
    ) -> None:
        self._db = db
        # LISTEN needs a connection of its own for as long as it listens, outside the pool.
        self._dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._broker = broker
        self._history = history
        self._clock = clock
        self._inbox: asyncio.Queue[Heard | CatchUp] = asyncio.Queue()
        self._recent: OrderedDict[ChangeKey, None] = OrderedDict()
        self._good_at: datetime | None = None
        # Set while the listening connection is up (tests and start-up wait on it).
        self.listening = asyncio.Event()
        # The server process of the listening connection (to find it in pg_stat_activity).
        self.listener_pid: int | None = None
        self.published = Counter(
            "certgraph_changes_published",
            "Status changes this process announced with NOTIFY.",
            registry=None,
        )
        self.heard = Counter(
            "certgraph_changes_heard",
            "Change notifications this process heard (from every process, its own included).",
            registry=None,
        )
        self.delivered = Counter(
            "certgraph_changes_delivered",
            "Status changes handed to this process's subscriptions (once per change).",
            registry=None,
        )
        self.reconnects = Counter(
            "certgraph_listen_reconnects",
            "Times the LISTEN connection was re-established after a drop.",
            registry=None,
        )

    def collectors(self) -> list[Counter]:
        return [self.published, self.heard, self.delivered, self.reconnects]

    # ---- publishing

    async def publish(self, changes: Sequence[StatusChange]) -> None:
        if not changes:
            return
        payloads = [{"channel": CHANNEL, "payload": notification(c)} for c in changes]

        def notify(connection: Connection) -> None:
            for payload in payloads:
                connection.execute(_NOTIFY, payload)

        try:
            await self._db.write(notify)
        except (SQLAlchemyError, OSError):
            # The change is committed; subscribers that reconnect catch up from the history.
            log.warning("could not announce %d status change(s)", len(changes), exc_info=True)
            return
        self.published.inc(len(changes))

    # ---- listening

    async def run(self) -> None:
        """Listen (reconnecting as needed) and deliver what is heard, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._listen(), name="pg-listen")
            tasks.create_task(self._deliver_forever(), name="pg-deliver")

    def _on_notification(
        self, connection: object, pid: int, channel: str, payload: str | bytes
    ) -> None:
        try:
            data = json.loads(payload)
            heard = Heard(
                TenantId(data["tenant"]), (CertificateId(data["certificate"]), int(data["version"]))
            )
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed %s notification: %r", CHANNEL, payload)
            return
        self.heard.inc()
        self._inbox.put_nowait(heard)

    async def _listen(self) -> None:
        backoff = RECONNECT_MIN_SECONDS
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(
                    self._dsn,
                    timeout=CONNECT_TIMEOUT_SECONDS,
                    server_settings={"application_name": LISTENER_NAME},
                )
                await self._listen_on(connection)
                backoff = RECONNECT_MIN_SECONDS
                log.warning("the %s listening connection was closed; reconnecting", CHANNEL)
            except Exception:
                log.warning(
                    "listening for %s failed; retrying in %.1f s", CHANNEL, backoff, exc_info=True
                )
            finally:
                self.listening.clear()
                self.listener_pid = None
                if connection is not None:
                    connection.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    async def _listen_on(self, connection: asyncpg.Connection) -> None:
        """LISTEN on `connection` until it is lost."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener(CHANNEL, self._on_notification)
        if self._good_at is not None:
            # Whatever was announced while nobody here listened is in the history.
            self.reconnects.inc()
            self._inbox.put_nowait(CatchUp(self._good_at - CATCH_UP_MARGIN))
        self._good_at = self._clock.now()
        self.listener_pid = connection.get_server_pid()
        self.listening.set()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
            if not lost.is_set():
                checked_at = self._clock.now()
                await asyncio.wait_for(connection.fetchval("SELECT 1"), KEEPALIVE_SECONDS)
                self._good_at = checked_at

    # ---- delivering

    async def _deliver_forever(self) -> None:
        while True:
            items = [await self._inbox.get()]
            while len(items) < BATCH and not self._inbox.empty():
                items.append(self._inbox.get_nowait())
            # In the order heard; a catch-up splits the run of notifications around it.
            run: list[Heard] = []
            for item in items:
                if isinstance(item, Heard):
                    run.append(item)
                    continue
                await self._persistently(self._deliver_heard, run)
                run = []
                await self._persistently(self._catch_up, item)
            await self._persistently(self._deliver_heard, run)

    async def _persistently(self, step: Callable[[T], Awaitable[None]], argument: T) -> None:
        """Run a delivery step, retrying through database hiccups; give up loudly."""
        delay = 0.1
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                await step(argument)
                return
            except Exception:
                # A database hiccup, most likely: try again; never let delivery stop.
                if attempt == DELIVERY_ATTEMPTS:
                    log.exception("could not deliver status changes to subscribers")
                    return
                await asyncio.sleep(delay)
                delay *= 2

    async def _deliver_heard(self, heard: list[Heard]) -> None:
        # Only changes someone here listens for, and not already delivered, are read.
        wanted = [
            h.key
            for h in heard
            if h.key not in self._recent and self._broker.subscriber_count(h.tenant_id)
        ]
        if not wanted:
            return
        found = await self._history.changes(wanted)
        self._hand_over([found[key] for key in wanted if key in found])

    async def _catch_up(self, catch_up: CatchUp) -> None:
        for tenant_id in self._broker.tenants():
            position = ChangePosition(catch_up.since, CertificateId(""), 0)
            while True:
                page = await self._history.after(tenant_id, position, REPLAY_PAGE)
                self._hand_over(
                    [c for c in page if (c.certificate_id, c.version) not in self._recent]
                )
                if len(page) < REPLAY_PAGE:
                    break
                position = page[-1].position

    def _hand_over(self, changes: list[StatusChange]) -> None:
        for change in changes:
            key = (change.certificate_id, change.version)
            if key in self._recent:
                continue
            self._recent[key] = None
            if len(self._recent) > REMEMBERED:
                self._recent.popitem(last=False)
            self._broker.deliver([change])
            self.delivered.inc()
