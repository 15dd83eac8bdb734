"""Server layer: GraphQL over WebSockets (graphql-transport-ws and the legacy graphql-ws).

A socket authenticates on `connection_init` (token in the payload or the upgrade request's
header) and is closed with 4401 without a token, 4403 with an unknown one, 4408 when it never
initialises, 4429 when its tenant already holds as many sockets as it may, and 1009 on a
message larger than the body limit. Each operation is admitted against the rate limit, the
document limit (checked before anything reads the document) and the per-connection and
per-tenant caps; a refused one gets an `error` message and the socket stays open.
Over graphql-transport-ws, live subscriptions that sockets ask alike run once, their results
sent to each (`server.events.multiplex`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from json import JSONDecodeError
from typing import TYPE_CHECKING, cast

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ErrorMessage as TransportErrorMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionErrorMessage,
    StartMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyConnectionInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ErrorMessage as LegacyErrorMessage,
)
from strawberry.utils.aio import aclosing

from domain.model import TenantId
from resolvers.context import Context
from server.events.multiplex import Multiplexer
from server.http.errors import OUTAGE_RETRY_SECONDS, error_response, utf8_size_over
from server.http.subscription_quota import ConnectionQuota

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from strawberry.schema.schema import StreamResult

    from server.http.graphql_app import GraphQLEndpoint

CLOSE_NO_TOKEN = 4401
CLOSE_UNKNOWN_TOKEN = 4403
CLOSE_INIT_TIMEOUT = 4408
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INTERNAL_ERROR = 1011
CLOSE_MESSAGE_TOO_BIG = 1009
# graphql-transport-ws uses 4429 for a second `connection_init`; a refused first one is this.
CLOSE_TOO_MANY_CONNECTIONS = 4429
TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"


@dataclass(slots=True)
class ConnectionContext(Context):
    """A WebSocket connection's context; the upgrade request may carry the token too."""

    handshake_authorization: str | None = None
    # The tenant this socket counts for in the connection caps, once initialised.
    admitted_tenant: TenantId | None = None


class SocketRefused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def refuse_socket(websocket: WebSocket, most: int) -> None:
    """Refuse the upgrade with 503 (a close before accepting it, where the server cannot
    answer an upgrade with a response: uvicorn's 403 then)."""
    if "websocket.http.response" not in websocket.scope.get("extensions", {}):
        await websocket.close(CLOSE_TRY_AGAIN_LATER)
        return
    response = error_response(
        503,
        f"This server already holds {most} WebSocket connections; try again shortly.",
        TOO_MANY_CONNECTIONS,
        {"Retry-After": str(OUTAGE_RETRY_SECONDS)},
    )
    await websocket.send_denial_response(response)


def admit_connection(
    connections: ConnectionQuota, context: ConnectionContext, tenant_id: TenantId
) -> None:
    """Count an initialised socket for its tenant, or refuse it with 4429."""
    # The legacy protocol lets a socket initialise again, maybe as another tenant.
    if context.admitted_tenant is not None:
        connections.release(context.admitted_tenant)
        context.admitted_tenant = None
    if not connections.admit(tenant_id):
        raise SocketRefused(
            CLOSE_TOO_MANY_CONNECTIONS,
            f"Too many connections: your tenant already has {connections.per_tenant} open",
        )
    context.admitted_tenant = tenant_id


class BoundedWebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's adapter, closing the socket with 1009 on a message over the endpoint's
    byte limit. uvicorn refuses such a message before it is read (`ws_max_size`); this holds
    under any ASGI server."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object]:
        limit = cast("GraphQLEndpoint", self.view).max_body_bytes
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if utf8_size_over(text, limit):
                    reason = f"Messages are limited to {limit} bytes"
                    await self.close(CLOSE_MESSAGE_TOO_BIG, reason)
                    return
                try:
                    yield self.view.decode_json(text)
                except JSONDecodeError as error:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from error
        except KeyError as error:
            raise NonTextMessageReceived from error
        except WebSocketDisconnect:
            pass


# Live subscriptions asked alike by many sockets run once (see `server.events.multiplex`).
def query_of(message: SubscribeMessage | StartMessage) -> object:
    """The document of a `subscribe` or `start`, whatever its shape (Strawberry checks that)."""
    payload: object = message.get("payload")
    return payload.get("query") if isinstance(payload, dict) else None


# Live subscriptions asked alike by many sockets run once (see `server.events.multiplex`).
multiplexer = Multiplexer()


class TransportWsHandler(BaseGraphQLTransportWSHandler[Context, None]):
    async def _send_result_stream(
        self, operation: Operation[Context, None], result_source: StreamResult
    ) -> None:
        # Strawberry's hook between running an operation and sending its results: a live
        # subscription others ask alike sends its group's results instead of its own (created,
        # never started, and closed by Strawberry).
        caller = self.context.caller
        shared = (
            None
            if caller is None
            else multiplexer.join(
                self.schema,
                cast("GraphQLEndpoint", self.view).services,
                caller,
                operation.query,
                operation.variables,
                operation.operation_name,
            )
        )
        if shared is None:
            await super()._send_result_stream(operation, result_source)
            return
        async with aclosing(shared):
            await super()._send_result_stream(operation, shared)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketRefused as refusal:
            await self.websocket.close(code=refusal.code, reason=refusal.reason)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        endpoint = cast("GraphQLEndpoint", self.view)
        caller = self.context.caller
        if caller is None or not self.connection_acknowledged or message["id"] in self.operations:
            # Strawberry closes the socket for each of these.
            await super().handle_subscribe(message)
            return
        refusal = endpoint.admit(caller, len(self.operations), query_of(message))
        if refusal is not None:
            error: TransportErrorMessage = {
                "id": message["id"],
                "type": "error",
                "payload": [refusal.formatted],
            }
            await self.send_message(error)
            return
        await super().handle_subscribe(message)
        operation = self.operations.get(message["id"])
        endpoint.count_until_done(caller, operation.task if operation else None)


class LegacyWsHandler(BaseGraphQLWSHandler[Context, None]):
    async def handle_connection_init(self, message: LegacyConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketRefused as refusal:
            error: ConnectionErrorMessage = {
                "type": "connection_error",
                "payload": {"message": refusal.reason},
            }
            await self.send_message(error)
            await self.websocket.close(code=refusal.code, reason=refusal.reason)

    async def handle(self) -> None:
        # Strawberry times out `connection_init` for graphql-transport-ws only.
        timeout = cast("GraphQLEndpoint", self.view).connection_init_wait_timeout
        timer = asyncio.create_task(self.close_unless_initialised(timeout.total_seconds()))
        try:
            await super().handle()
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    async def close_unless_initialised(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self.connection_acknowledged:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                await self.websocket.close(
                    code=CLOSE_INIT_TIMEOUT, reason="Connection initialisation timeout"
                )

    async def handle_start(self, message: StartMessage) -> None:
        endpoint = cast("GraphQLEndpoint", self.view)
        caller = self.context.caller
        if caller is None or not self.connection_acknowledged:
            await super().handle_start(message)
            return
        # A start with an id in use replaces that operation.
        running = sum(
            1 for key, task in self.tasks.items() if key != message["id"] and not task.done()
        )
        refusal = endpoint.admit(caller, running, query_of(message))
        if refusal is not None:
            error: LegacyErrorMessage = {
                "type": "error",
                "id": message["id"],
                "payload": refusal.formatted,
            }
            await self.send_message(error)
            return
        await super().handle_start(message)
        endpoint.count_until_done(caller, self.tasks.get(message["id"]))
