"""Resolver layer: the Subscription root (status changes of the caller's certificates).

A change reaches every subscriber of its tenant. Those that get it at the same time share one
read of the certificate and so one event object (`_read_change`); subscribers with the same
operation, variables and caller then share one execution of it (the engine's shared
execution, `graphql_engine.shared_execution`): a thousand subscribers cost one read and one
execution per change, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from graphql import GraphQLError

from domain.model import CertificateId, TenantId
from domain.ports import ChangePosition
from domain.reading import CertificateReader
from resolvers import fields
from resolvers.connection import BadUserInput
from resolvers.context import (
    Context,
    FeedChange,
    SubscriberLagging,
    UnknownPosition,
)
from resolvers.cursors import decode_json_cursor, encode_json_cursor
from resolvers.enums import CertificateStatus
from resolvers.ids import CERTIFICATE, local_id
from resolvers.types import Certificate

LAGGING = "SUBSCRIBER_LAGGING"


def lagging_error() -> GraphQLError:
    """What a subscriber that fell too far behind is told, as its subscription ends."""
    return GraphQLError(
        "This subscription fell too far behind and was ended: subscribe again with "
        "`after` set to the last cursor you received to get every change since.",
        extensions={"code": LAGGING},
    )


# A cursor is a change's feed sequence, base64url of its JSON. Cursors handed out before the
# feed had sequences held [time, certificate id, version]: still accepted, the feed finds the
# change they name (`UnknownPosition` if none, answered as BAD_USER_INPUT).
_MAX_SEQUENCE = 2**63 - 1
# No cursor this server hands out is longer; longer input is refused before it is decoded.
_MAX_CURSOR = 200


def encode_change_cursor(sequence: int) -> str:
    return encode_json_cursor(sequence)


def decode_change_cursor(cursor: str) -> int | ChangePosition:
    """The feed sequence a cursor holds, or the position an old cursor names."""
    refused = BadUserInput(f"{cursor[:_MAX_CURSOR]!r} is not a cursor of certificateStatusChanged.")
    if len(cursor) > _MAX_CURSOR:
        raise refused
    try:
        value = decode_json_cursor(cursor)
    except ValueError:
        raise refused from None
    if type(value) is int and 0 <= value <= _MAX_SEQUENCE:
        return value
    if not isinstance(value, list) or len(value) != 3:
        raise refused
    changed_at, certificate_id, version = value
    try:
        at = datetime.fromisoformat(changed_at)
    except (ValueError, TypeError):
        raise refused from None
    if not isinstance(certificate_id, str) or type(version) is not int or at.tzinfo is None:
        raise refused
    return ChangePosition(at, CertificateId(certificate_id), version)


@strawberry.type(description="A certificate changed status.")
class CertificateStatusChange:
    certificate: Certificate = strawberry.field(description="The certificate as it is now.")
    previous_status: CertificateStatus | None
    status: CertificateStatus
    changed_at: datetime
    cursor: str = strawberry.field(
        description="Where this change sits in your history: pass it as `after` when you "
        "subscribe again to get every change since, none twice."
    )
    # Subscribers that get this very object share its executions (`graphql_engine`'s
    # shared execution looks for this list).
    shared_executions: strawberry.Private[list[object]] = dataclasses.field(
        default_factory=list, repr=False, compare=False
    )


# Subscribers waiting for a read of a change's certificate, by reader, tenant and change.
_ReadKey = tuple[int, TenantId, FeedChange]
_waiting: dict[_ReadKey, list[asyncio.Future[CertificateStatusChange | None]]] = {}
# The event loop keeps only weak references to tasks.
_reads: set[asyncio.Task[None]] = set()


async def _read_change(
    reader: CertificateReader, tenant_id: TenantId, change: FeedChange
) -> CertificateStatusChange | None:
    """The change as subscribers get it, read afresh. Those asking in the same turn of the event
    loop (all subscribers the change just reached) share one read, and so one event object; a
    subscriber that goes away cancels only its own wait."""
    key = (id(reader), tenant_id, change)
    waiters = _waiting.get(key)
    if waiters is None:
        waiters = _waiting[key] = []
        # A task's first step runs after the callbacks already due in this turn.
        task = asyncio.create_task(_read_for_waiters(key, reader, tenant_id, change))
        _reads.add(task)
        task.add_done_callback(_reads.discard)
    waiter: asyncio.Future[CertificateStatusChange | None]
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    return await waiter


async def _read_for_waiters(
    key: _ReadKey, reader: CertificateReader, tenant_id: TenantId, change: FeedChange
) -> None:
    try:
        event = await _read(reader, tenant_id, change)
    except Exception as error:
        for waiter in _still_waiting(key):
            waiter.set_exception(error)
    else:
        for waiter in _still_waiting(key):
            waiter.set_result(event)
    finally:
        # Cancelled (the server stops): so are the waits.
        for waiter in _still_waiting(key):
            waiter.cancel()


def _still_waiting(key: _ReadKey) -> list[asyncio.Future[CertificateStatusChange | None]]:
    """Taken off: the waiters of a read but those that went away (they cancelled their own)."""
    return [waiter for waiter in _waiting.pop(key, ()) if not waiter.done()]


async def _read(
    reader: CertificateReader, tenant_id: TenantId, entry: FeedChange
) -> CertificateStatusChange | None:
    change = entry.change
    found = await reader.certificates(tenant_id, [change.certificate_id])
    certificate = found.get(change.certificate_id)
    if certificate is None:
        return None
    return CertificateStatusChange(
        certificate=Certificate.from_model(certificate),
        previous_status=change.previous_status,
        status=change.status,
        changed_at=change.changed_at,
        cursor=encode_change_cursor(entry.sequence),
    )


@strawberry.type
class Subscription:
    @fields.subscription(
        description="Status changes of your certificates: those listed (ids that are not yours "
        "are ignored), or all of them when certificateIds is null. With `after` (a `cursor` "
        "you received), the changes since that one come first, in order, then the live ones."
    )
    async def certificate_status_changed(
        self,
        info: strawberry.Info[Context, None],
        certificate_ids: list[strawberry.ID] | None = None,
        after: str | None = None,
    ) -> AsyncGenerator[CertificateStatusChange, None]:
        context = info.context
        tenant_id = context.tenant_id
        wanted = (
            None
            if certificate_ids is None
            else {local_id(global_id, CERTIFICATE) for global_id in certificate_ids} - {None}
        )
        start = None if after is None else decode_change_cursor(after)
        reader = context.services.reader
        # The feed carries only this tenant's changes: another tenant's ids never match.
        async with contextlib.AsyncExitStack() as stack:
            try:
                changes = await stack.enter_async_context(
                    context.services.changes.subscribe(tenant_id, start)
                )
            except UnknownPosition:
                raise BadUserInput(
                    f"{after!r} names no change of yours: subscribe without `after`, or with a "
                    "cursor you received."
                ) from None
            try:
                async for entry in changes:
                    if wanted is not None and entry.change.certificate_id not in wanted:
                        continue
                    # Read afresh for every change: this context lives as long as the connection.
                    event = await _read_change(reader, tenant_id, entry)
                    if event is not None:
                        yield event
            except SubscriberLagging:
                raise lagging_error() from None
