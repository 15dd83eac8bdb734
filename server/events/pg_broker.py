"""Server layer: status changes between processes, over PostgreSQL LISTEN/NOTIFY.

Each process announces its committed changes with `NOTIFY certgraph_changes` and LISTENs on
one dedicated connection. Whatever it hears, its own changes included, tells it to read the
change feed (`Broker.poll`): every change committed since it last read, in commit order. So
every subscriber of every process hears every change once, in the order of the feed, whatever
order the notifications arrive in.

When the listening connection drops, the process reconnects with backoff and reads the feed
again: what was announced meanwhile is in it, after the last change it delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence

import asyncpg
from prometheus_client import Counter
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from domain.ports import StatusChange
from server.events.broker import Broker
from server.persistence.database import Database

log = logging.getLogger(__name__)

CHANNEL = "certgraph_changes"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
# The listening connections' name in pg_stat_activity: one per serving process.
LISTENER_NAME = "certgraph-listen"
# How often the idle listening connection is checked (a half-open TCP connection is silent).
KEEPALIVE_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 10.0
DELIVERY_ATTEMPTS = 6


def notification(change: StatusChange) -> str:
    """The NOTIFY payload: ids only; listeners read the changes from the feed."""
    return json.dumps(
        {
            "tenant": change.tenant_id,
            "certificate": change.certificate_id,
            "version": change.version,
        },
        separators=(",", ":"),
    )


class PgChangePublisher:
    """Implements the domain's `ChangePublisher` across processes; `run()` listens."""

    def __init__(self, db: Database, broker: Broker) -> None:
        self._db = db
        # LISTEN needs a connection of its own for as long as it listens, outside the pool.
        self._dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._broker = broker
        # Set by every notification and reconnection: the feed has news to read.
        self._news = asyncio.Event()
        self._connected_before = False
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
            "Status changes read from the feed for this process's subscriptions (once each).",
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
            # Committed, so in the feed: the next notification of any process delivers it.
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
        # Whatever it says, the feed holds the changes themselves.
        self.heard.inc()
        self._news.set()

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
        if self._connected_before:
            self.reconnects.inc()
        self._connected_before = True
        # Whatever was announced while nobody here listened is in the feed.
        self._news.set()
        self.listener_pid = connection.get_server_pid()
        self.listening.set()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
            if not lost.is_set():
                await asyncio.wait_for(connection.fetchval("SELECT 1"), KEEPALIVE_SECONDS)

    # ---- delivering

    async def _deliver_forever(self) -> None:
        while True:
            await self._news.wait()
            self._news.clear()
            self.delivered.inc(await self._poll_persistently())

    async def _poll_persistently(self) -> int:
        """Read the feed, retrying through database hiccups; give up loudly (the next
        notification reads from the same place again)."""
        delay = 0.1
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                return await self._broker.poll()
            except Exception:
                if attempt == DELIVERY_ATTEMPTS:
                    log.exception("could not deliver status changes to subscribers")
                    return 0
                await asyncio.sleep(delay)
                delay *= 2
        return 0
