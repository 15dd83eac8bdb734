"""Resolver layer: the Subscription root (status changes of the caller's certificates)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator
from datetime import datetime

import orjson
import strawberry
from graphql import GraphQLError

from domain.model import CertificateId
from domain.ports import ChangePosition
from resolvers import fields
from resolvers.connection import BadUserInput
from resolvers.context import Context, SubscriberLagging
from resolvers.enums import CertificateStatus
from resolvers.ids import CERTIFICATE, local_id
from resolvers.types import Certificate

LAGGING = "SUBSCRIBER_LAGGING"


def encode_change_cursor(position: ChangePosition) -> str:
    data = [position.changed_at.isoformat(), position.certificate_id, position.version]
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode("ascii")


def decode_change_cursor(cursor: str) -> ChangePosition:
    try:
        changed_at, certificate_id, version = orjson.loads(
            base64.urlsafe_b64decode(cursor.encode("ascii"))
        )
        position = ChangePosition(
            datetime.fromisoformat(changed_at), CertificateId(certificate_id), version
        )
    except (ValueError, TypeError, UnicodeError, binascii.Error, orjson.JSONDecodeError):
        raise BadUserInput(f"{cursor!r} is not a cursor of certificateStatusChanged.") from None
    if (
        not isinstance(certificate_id, str)
        or not isinstance(version, int)
        or position.changed_at.tzinfo is None
    ):
        raise BadUserInput(f"{cursor!r} is not a cursor of certificateStatusChanged.")
    return position


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
        async with context.services.changes.subscribe(tenant_id, start) as changes:
            try:
                async for change in changes:
                    if wanted is not None and change.certificate_id not in wanted:
                        continue
                    # Read afresh for every change: this context lives as long as the connection.
                    found = await reader.certificates(tenant_id, [change.certificate_id])
                    certificate = found.get(change.certificate_id)
                    if certificate is None:
                        continue
                    yield CertificateStatusChange(
                        certificate=Certificate.from_model(certificate),
                        previous_status=change.previous_status,
                        status=change.status,
                        changed_at=change.changed_at,
                        cursor=encode_change_cursor(change.position),
                    )
            except SubscriberLagging:
                raise GraphQLError(
                    "This subscription fell too far behind and was ended: subscribe again with "
                    "`after` set to the last cursor you received to get every change since.",
                    extensions={"code": LAGGING},
                ) from None
