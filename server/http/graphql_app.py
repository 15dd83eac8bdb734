"""Server layer: the GraphQL endpoint at /graphql (HTTP, WebSocket, GraphiQL) and its guards.

Over HTTP every operation needs `Authorization: Bearer <token>` (401 otherwise), and the body
must be a JSON object of bounded size, its document (over GET too) of a smaller bound checked
before it is lexed; anything else gets a 4xx with a GraphQL-shaped error, never a 5xx.
WebSockets (graphql-transport-ws and the legacy graphql-ws) authenticate on `connection_init`,
with the token in its payload or in the upgrade request's header; the socket is closed with
4401 without a token and 4403 with an unknown one.

The guards of the README's "Security" section live here too: a token bucket per tenant (429
with `Retry-After`), media types and their status codes (`server.http.media_types`), WebSocket
origins and `connection_init` timeouts, and caps on operations per connection and per tenant.
Nothing escapes as a bare 500: an outage is a 503 and a bug a masked error with a request id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from graphql_engine.error_policy import SERVICE_UNAVAILABLE
from resolvers.context import Caller, Context, Services
from server.http import media_types
from server.http.auth import Authenticator, bearer
from server.http.errors import (
    DOCUMENT_TOO_LARGE,
    OUTAGE_RETRY_SECONDS,
    BodyTooLarge,
    DocumentTooLarge,
    document_too_large,
    error_response,
    failure_response,
    limit_body,
    rate_limited_error,
    too_many_requests,
    unauthenticated,
)
from server.http.graphql_ws import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_TOKEN,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNKNOWN_TOKEN,
    BoundedWebSocketAdapter,
    ConnectionContext,
    LegacyWsHandler,
    SocketRefused,
    TransportWsHandler,
    admit_connection,
    refuse_socket,
)
from server.http.media_types import GRAPHQL_RESPONSE, JSON
from server.http.outages import is_outage
from server.http.rate_limit import TokenBuckets
from server.http.subscription_quota import ConnectionQuota, SubscriptionQuota

log = logging.getLogger(__name__)

HTTP_OPERATIONS = {
    "GET": {OperationType.QUERY},
    "POST": {OperationType.QUERY, OperationType.MUTATION},
}
# Acknowledge a WebSocket connection without a payload.
NO_ACK_PAYLOAD: UnsetType = UNSET


# ---- the endpoint


class GraphQLEndpoint(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWsHandler
    graphql_ws_handler_class = LegacyWsHandler
    websocket_adapter_class = BoundedWebSocketAdapter

    def __init__(
        self,
        schema: BaseSchema,
        services: Services,
        authenticator: Authenticator,
        *,
        graphiql: bool,
        max_body_bytes: int,
        max_document_bytes: int,
        allowed_origins: Sequence[str] = (),
        ws_init_timeout_seconds: float = 10.0,
        quota: SubscriptionQuota | None = None,
        rate_limit: TokenBuckets | None = None,
        connections: ConnectionQuota | None = None,
    ) -> None:
        self.quota = quota or SubscriptionQuota(per_connection=20, per_tenant=200)
        self.connections = connections or ConnectionQuota(per_process=2_000, per_tenant=100)
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            connection_init_wait_timeout=timedelta(seconds=ws_init_timeout_seconds),
            # Ours refuses first, with a code (`admit`); Strawberry's is the backstop.
            max_subscriptions_per_connection=self.quota.per_connection + 1,
            # Browser pages on other origins may open sockets only if listed; same-origin
            # pages and non-browser clients (no Origin header) always may.
            allowed_origins=allowed_origins,
        )
        self.services = services
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        self.max_document_bytes = max_document_bytes
        self.rate_limit = rate_limit or TokenBuckets(rate=0, burst=1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.serve_socket(WebSocket(scope, receive=receive, send=send))
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope = media_types.with_lowercase_media_type(scope)
        request = Request(scope, receive=limit_body(receive, self.max_body_bytes))
        try:
            response = await self.answer(request)
        except BodyTooLarge:
            response = error_response(
                413, f"The body exceeds {self.max_body_bytes} bytes.", "PAYLOAD_TOO_LARGE"
            )
        except DocumentTooLarge as refused:
            response = error_response(413, refused.refusal.message, DOCUMENT_TOO_LARGE)
        except HTTPException as error:
            response = self.refusal(request, error)
        except ClientDisconnect:
            # The client left before its body arrived: nobody to answer, nothing went wrong.
            log.debug("client disconnected before sending its request")
            return
        except Exception as error:
            # The last line of defence: never Starlette's bare text 500 with no GraphQL shape.
            response = failure_response(error)
        if getattr(request.state, "media_type", JSON) == GRAPHQL_RESPONSE and (
            response.media_type == JSON or isinstance(response, JSONResponse)
        ):
            response.headers["content-type"] = media_types.content_type(GRAPHQL_RESPONSE)
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        if request.method not in ("GET", "POST"):
            return error_response(
                405, "Use GET or POST.", "METHOD_NOT_ALLOWED", {"Allow": "GET, POST"}
            )
        if self.should_render_graphql_ide(self.request_adapter_class(request)):
            if self.graphql_ide is None:
                return error_response(404, "GraphiQL is turned off on this server.", "NOT_FOUND")
            return await self.render_graphql_ide(request)
        media_type = media_types.negotiate(request.headers.get("accept"))
        if media_type is None:
            return error_response(
                406,
                f"This endpoint answers {JSON} or {GRAPHQL_RESPONSE}; ask for one in `Accept`.",
                "NOT_ACCEPTABLE",
            )
        request.state.media_type = media_type
        caller = await self.authenticator.caller(bearer(request.headers.get("authorization")))
        if caller is None:
            # Guessing tokens costs a bucket of its own, per client address.
            address = request.client.host if request.client else "unknown"
            if wait := self.rate_limit.take(f"unauthenticated:{address}"):
                return too_many_requests(wait)
            return unauthenticated(
                "Send `Authorization: Bearer <token>` with a valid token."
                if request.headers.get("authorization")
                else "Authentication required: send `Authorization: Bearer <token>`."
            )
        if wait := self.rate_limit.take(f"tenant:{caller.tenant_id}"):
            return too_many_requests(wait)
        if request.method == "POST" and (refused := await self.check_body(request)):
            return refused
        context = Context(self.services, caller)
        try:
            response = await self.run(request, context=context)
        finally:
            context.release()
        outcome = getattr(request.state, "outcome", media_types.Outcome.RAN)
        response.status_code = media_types.status_for(media_type, outcome)
        if outcome is media_types.Outcome.UNAVAILABLE:
            response.headers["Retry-After"] = str(OUTAGE_RETRY_SECONDS)
        return response

    async def check_body(self, request: Request) -> Response | None:
        """Refuse a body that is not one JSON object before Strawberry sees it."""
        if not media_types.is_json_body(request.headers.get("content-type", "")):
            return error_response(
                415, f"Send the operation as {JSON} (UTF-8).", "UNSUPPORTED_MEDIA_TYPE"
            )
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            # Also invalid UTF-8 and nesting deeper than the parser allows.
            return error_response(400, "The body is not valid JSON.", "BAD_REQUEST")
        if isinstance(data, list):
            return error_response(
                400,
                "Batched operations (a JSON array) are not accepted: send one operation "
                "per request.",
                "BATCHING_NOT_SUPPORTED",
            )
        if not isinstance(data, dict):
            return error_response(
                400, "The body must be a JSON object with a `query`.", "BAD_REQUEST"
            )
        return None

    # ---- WebSockets: caps on how many are open, the same rate limit on their operations, and
    # caps on how many of those run at once

    async def serve_socket(self, websocket: WebSocket) -> None:
        if not self.connections.open():
            await refuse_socket(websocket, self.connections.per_process)
            return
        context = await self.get_context(websocket, websocket)
        try:
            await self.run(websocket, context=context)
        finally:
            self.connections.close()
            if isinstance(context, ConnectionContext) and context.admitted_tenant is not None:
                self.connections.release(context.admitted_tenant)

    def admit(
        self, caller: Caller, running_on_connection: int, query: object
    ) -> GraphQLError | None:
        """Whether a socket may start one more operation (its document not yet read);
        counted when admitted."""
        if wait := self.rate_limit.take(f"tenant:{caller.tenant_id}"):
            return rate_limited_error(wait)
        if refused := document_too_large(query, self.max_document_bytes):
            return refused
        return self.quota.admit(caller.tenant_id, running_on_connection)

    def count_until_done(self, caller: Caller, task: asyncio.Task[Any] | None) -> None:
        """Release the caller's admission once the operation's task ends."""
        if task is None:
            self.quota.release(caller.tenant_id)
            return
        task.add_done_callback(lambda _: self.quota.release(caller.tenant_id))

    @staticmethod
    def refusal(request: Request, error: HTTPException) -> Response:
        cause = error.__cause__
        if isinstance(cause, InvalidOperationTypeError):
            if cause.operation_type is OperationType.SUBSCRIPTION:
                return error_response(
                    400,
                    "Subscriptions run over a WebSocket at /graphql (graphql-transport-ws).",
                    "BAD_REQUEST",
                )
            return error_response(
                405,
                "Only queries are allowed over GET; use POST.",
                "METHOD_NOT_ALLOWED",
                {"Allow": "POST"},
            )
        return error_response(error.status_code, error.reason, "BAD_REQUEST")

    # Strawberry's hooks

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        # Where GET and POST requests both become a document, before anything reads it.
        data = await super().parse_http_body(request)
        for item in data if isinstance(data, list) else [data]:
            if refused := document_too_large(item.query, self.max_document_bytes):
                raise DocumentTooLarge(refused)
        return data

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        body = await super().process_result(request, result)
        outcome = media_types.outcome_of(result, SERVICE_UNAVAILABLE)
        request.state.outcome = outcome
        if (
            outcome is media_types.Outcome.REQUEST_ERROR
            and getattr(request.state, "media_type", JSON) == GRAPHQL_RESPONSE
        ):
            # GraphQL over HTTP: a request error has no `data` entry at all.
            return cast("GraphQLHTTPResponse", {k: v for k, v in body.items() if k != "data"})
        return body

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        # Strawberry's own, minus subscriptions over HTTP (they would run as a plain query).
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=HTTP_OPERATIONS[request_adapter.method],
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as error:
            raise HTTPException(400, error.as_http_error_reason()) from error
        except InvalidOperationTypeError as error:
            raise HTTPException(400, error.as_http_error_reason(request_adapter.method)) from error
        except MissingQueryError as error:
            raise HTTPException(400, "No GraphQL query found in the request") from error

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def encode_json(self, data: object) -> str:
        # Text, not bytes: WebSocket protocols expect text frames.
        return orjson.dumps(data).decode()

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        # Called for WebSockets only (HTTP passes its context to `run`): one per connection,
        # so its loaders must not cache (see `resolvers.context.Loaders`).
        return ConnectionContext(
            self.services,
            cache_loads=False,
            handshake_authorization=request.headers.get("authorization"),
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params or {}
        presented = params.get("Authorization", params.get("authorization"))
        if presented is None and isinstance(context, ConnectionContext):
            presented = context.handshake_authorization
        credentials = bearer(presented)
        try:
            caller = await self.authenticator.caller(credentials)
        except Exception as error:
            if is_outage(error):
                raise SocketRefused(CLOSE_TRY_AGAIN_LATER, "Service unavailable") from error
            log.exception("WebSocket authentication failed unexpectedly")
            raise SocketRefused(CLOSE_INTERNAL_ERROR, "Internal error") from error
        if caller is None:
            if credentials.presented:
                raise SocketRefused(CLOSE_UNKNOWN_TOKEN, "Forbidden: unknown token")
            raise SocketRefused(CLOSE_NO_TOKEN, "Unauthorized: no token")
        if isinstance(context, ConnectionContext):
            admit_connection(self.connections, context, caller.tenant_id)
        context.caller = caller
        return NO_ACK_PAYLOAD
