"""certificateStatusChanged(after:): a returning subscriber misses nothing, repeats nothing."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import orjson

from domain.model import CertificateId
from domain.ports import ChangePosition, StatusChange
from domain.statuses import CertificateStatus as S
from resolvers.context import FeedChange
from resolvers.ids import CERTIFICATE, local_id
from resolvers.subscriptions import decode_change_cursor, encode_change_cursor
from server.events.broker import QUEUE_LIMIT
from tests.resolvers.conftest import Api, eventually
from tests.resolvers.test_subscriptions import WITHDRAW, Subscriber, subscribed

CATCH_UP = """
subscription Changes($ids: [ID!], $after: String) {
  certificateStatusChanged(certificateIds: $ids, after: $after) {
    previousStatus status cursor certificate { id status }
  }
}
"""


async def test_a_subscriber_resuming_from_its_cursor_gets_the_missed_changes_then_live(
    api: Api,
) -> None:
    watched = await api.applied("watched")
    other = await api.applied("other")
    async with subscribed(api, api.acme, [watched]) as subscriber:
        await api.data(WITHDRAW, {"id": watched})
        await subscriber.next()
    cursor = await last_cursor(api, watched)

    # While away: the CA approves the withdrawal; another certificate changes too.
    await api.decide(watched, "APPROVE")
    await api.wait_for_status(watched, "PENDING_APPLICATION")
    await api.data(WITHDRAW, {"id": other})

    resumed = await resume(api, cursor)
    try:
        missed = [await resumed.next(), await resumed.next()]
        assert [(c["certificate"]["id"], c["status"]) for c in missed] == [
            (watched, "PENDING_APPLICATION"),
            (other, "CA_VERIFYING_WITHDRAWAL"),
        ]
        await api.decide(other, "REJECT")
        live = await resumed.next()
        assert (live["certificate"]["id"], live["status"]) == (other, "PENDING_DOMAIN_VERIFICATION")
        assert resumed.pending() == 0
        # Each cursor moves forward: resuming from any of them gives what followed it.
        sequences = [decode_change_cursor(c["cursor"]) for c in [*missed, live]]
        assert all(isinstance(s, int) for s in sequences)
        assert sequences == sorted(sequences) and len(set(sequences)) == 3
    finally:
        await resumed.close()


async def catch_up(api: Api, after: str | None, ids: list[str] | None = None) -> Any:
    """The catch-up subscription of acme's caller (the stream, or the refusal as a result)."""
    return await api.schema.subscribe(
        CATCH_UP,
        variable_values={"ids": ids, "after": after},
        context_value=api.context(api.acme, cache=False),
    )


async def resume(api: Api, after: str, ids: list[str] | None = None) -> Subscriber:
    """A subscriber collecting the changes after the cursor `after`, in the background."""
    stream = await catch_up(api, after, ids)
    assert isinstance(stream, AsyncGenerator)
    return Subscriber(stream)


async def last_cursor(api: Api, certificate_id: str) -> str:
    """The cursor a subscriber got with the latest change of `certificate_id`, as it would
    have it: replayed from the start of the history."""
    subscriber = await resume(api, FROM_THE_START, [certificate_id])
    try:
        changes = [await subscriber.next() for _ in range(3)]
    finally:
        await subscriber.close()
    assert [c["status"] for c in changes] == [
        "PENDING_APPLICATION",
        "PENDING_DOMAIN_VERIFICATION",
        "CA_VERIFYING_WITHDRAWAL",
    ]
    cursor: str = changes[-1]["cursor"]
    return cursor


FROM_THE_START = encode_change_cursor(0)


def test_a_cursor_is_a_feed_sequence_and_old_cursors_still_decode() -> None:
    assert decode_change_cursor(FROM_THE_START) == 0
    assert decode_change_cursor(encode_change_cursor(2**63 - 1)) == 2**63 - 1
    # Handed out before changes were numbered: [time, certificate id, version].
    old = decode_change_cursor("WyIyMDAwLTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwiYyIsMV0=")
    assert old == ChangePosition(datetime(2000, 1, 1, tzinfo=UTC), CertificateId("c"), 1)


async def refusal(api: Api, cursor: str) -> Any:
    stream = await catch_up(api, cursor)
    result: Any = stream
    if isinstance(stream, AsyncGenerator):
        result = await anext(stream)
        await stream.aclose()
    assert result.errors, cursor
    return result.errors[0]


async def test_a_malformed_cursor_is_refused_as_bad_input(api: Api) -> None:
    for cursor in [
        "not-a-cursor",
        "WyJ4Il0=",  # ["x"]
        "WyIyMDAwLTAxLTAxVDAwOjAwOjAwIiwiIiwwXQ==",  # an old cursor without a time zone
        encode_change_cursor(-1),
        encode_change_cursor(2**63),
        "dHJ1ZQ==",  # true
        "MQ" * 200,
    ]:
        error = await refusal(api, cursor)
        assert error.extensions == {"code": "BAD_USER_INPUT"}, cursor


async def test_an_old_cursor_resumes_after_its_change_and_one_naming_none_is_refused(
    api: Api,
) -> None:
    watched = await api.applied("watched")
    await api.data(WITHDRAW, {"id": watched})
    new_cursor = await last_cursor(api, watched)
    # The same change as a cursor named it before changes were numbered.
    certificate_id = local_id(watched, CERTIFICATE)
    assert certificate_id is not None
    async with api.container.broker.subscribe(api.acme.tenant_id, after=0) as stream:
        withdrawn = [await anext(aiter(stream)) for _ in range(3)][-1]
    assert encode_change_cursor(withdrawn.sequence) == new_cursor
    old_cursor = base64.urlsafe_b64encode(
        orjson.dumps([withdrawn.change.changed_at.isoformat(), certificate_id, 3])
    ).decode()

    await api.decide(watched, "APPROVE")
    await api.wait_for_status(watched, "PENDING_APPLICATION")
    for cursor in (old_cursor, new_cursor):
        resumed = await resume(api, cursor)
        try:
            change = await resumed.next()
        finally:
            await resumed.close()
        assert (change["certificate"]["id"], change["status"]) == (watched, "PENDING_APPLICATION")

    # Another tenant's change, none at all, or one not made yet: refused, and nothing is left
    # subscribed.
    unknown = base64.urlsafe_b64encode(
        orjson.dumps([withdrawn.change.changed_at.isoformat(), "nope", 3])
    ).decode()
    for cursor in (unknown, encode_change_cursor(10**12)):
        error = await refusal(api, cursor)
        assert error.extensions == {"code": "BAD_USER_INPUT"}
        assert "names no change of yours" in error.message
    assert api.container.broker.subscriber_count() == 0


async def test_a_subscriber_too_far_behind_is_told_to_resume_from_its_cursor(api: Api) -> None:
    global_id = await api.applied()
    certificate_id = local_id(global_id, CERTIFICATE)
    assert certificate_id is not None
    stream = await catch_up(api, None)
    assert isinstance(stream, AsyncGenerator)
    broker = api.container.broker
    first = asyncio.create_task(anext(stream))

    async def listening() -> bool:
        return broker.subscriber_count(api.acme.tenant_id) == 1

    await eventually(listening, what="the subscription to reach the broker")
    # More changes than a subscription queues arrive before the subscriber reads one.
    now = datetime.now(UTC)
    broker.deliver(
        [
            FeedChange(
                sequence,
                StatusChange(
                    api.acme.tenant_id,
                    CertificateId(certificate_id),
                    S.PENDING_APPLICATION,
                    S.PENDING_DOMAIN_VERIFICATION,
                    now,
                    2,
                ),
            )
            for sequence in range(1, QUEUE_LIMIT + 2)
        ]
    )
    results = [await first]
    try:
        while not results[-1].errors:
            results.append(await anext(stream))
    finally:
        await stream.aclose()
    # Everything queued was delivered, then the error that says how to resume.
    assert len(results) == QUEUE_LIMIT + 1
    assert results[-1].errors[0].extensions == {"code": "SUBSCRIBER_LAGGING"}
