"""Server layer: the GraphQL endpoint at /graphql (HTTP, WebSocket, GraphiQL) and its guards.

Over HTTP every operation needs `Authorization: Bearer <token>` (401 otherwise), and the body
must be a JSON object of bounded size; anything else gets a 4xx with a GraphQL-shaped error,
never a 5xx. WebSockets (graphql-transport-ws and the legacy graphql-ws) authenticate on
`connection_init`, with the token in its payload or in the upgrade request's header; the
socket is closed with 4401 without a token and 4403 with an unknown one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionErrorMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyConnectionInitMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from resolvers.context import Caller, Context, Services
from resolvers.schema import build_schema
from server.container import Container
from server.persistence.queries import SqlCertificateReader
from server.persistence.tenants import TenantStore
from server.settings import Settings

DEV_TENANT = "dev"
HTTP_OPERATIONS = {
    "GET": {OperationType.QUERY},
    "POST": {OperationType.QUERY, OperationType.MUTATION},
}
# Acknowledge a WebSocket connection without a payload.
NO_ACK_PAYLOAD: UnsetType = UNSET
CLOSE_NO_TOKEN = 4401
CLOSE_UNKNOWN_TOKEN = 4403


# ---- errors a client gets before any GraphQL runs


def error_response(
    status: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A GraphQL-shaped request error (no `data`: the operation never ran)."""
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def unauthenticated(message: str) -> JSONResponse:
    return error_response(401, message, "UNAUTHENTICATED", {"WWW-Authenticate": "Bearer"})


class BodyTooLarge(Exception):
    pass


def limit_body(receive: Receive, max_bytes: int) -> Receive:
    """`receive`, raising BodyTooLarge once the request body passes `max_bytes`."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge
        return message

    return limited


# ---- authentication


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented: nothing, or a bearer token (possibly malformed)."""

    token: str | None
    presented: bool


def bearer(authorization: object) -> Credentials:
    if not isinstance(authorization, str) or not authorization.strip():
        return Credentials(None, presented=False)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Credentials(None, presented=True)
    return Credentials(token.strip(), presented=True)


class Authenticator:
    """Bearer token -> caller; with `auth = off`, everyone is tenant `dev`."""

    def __init__(self, tenants: TenantStore, *, auth_off: bool) -> None:
        self._tenants = tenants
        self._auth_off = auth_off
        self._dev: Caller | None = None

    async def caller(self, credentials: Credentials) -> Caller | None:
        if self._auth_off:
            if self._dev is None:
                dev = await self._tenants.ensure_tenant(DEV_TENANT)
                self._dev = Caller(dev.id, dev.name)
            return self._dev
        if credentials.token is None:
            return None
        tenant = await self._tenants.tenant_for_token(credentials.token)
        return None if tenant is None else Caller(tenant.id, tenant.name)


# ---- WebSockets: authenticate on connection_init, close with 4401 / 4403


@dataclass(slots=True)
class ConnectionContext(Context):
    """A WebSocket connection's context; the upgrade request may carry the token too."""

    handshake_authorization: str | None = None


class SocketRefused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TransportWsHandler(BaseGraphQLTransportWSHandler[Context, None]):
    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketRefused as refusal:
            await self.websocket.close(code=refusal.code, reason=refusal.reason)


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


# ---- the endpoint


class GraphQLEndpoint(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWsHandler
    graphql_ws_handler_class = LegacyWsHandler

    def __init__(
        self,
        schema: BaseSchema,
        services: Services,
        authenticator: Authenticator,
        *,
        graphiql: bool,
        max_body_bytes: int,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            connection_init_wait_timeout=timedelta(seconds=10),
        )
        self.services = services
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=limit_body(receive, self.max_body_bytes))
        try:
            response = await self.answer(request)
        except BodyTooLarge:
            response = error_response(
                413, f"The body exceeds {self.max_body_bytes} bytes.", "PAYLOAD_TOO_LARGE"
            )
        except HTTPException as error:
            response = self.refusal(request, error)
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
        caller = await self.authenticator.caller(bearer(request.headers.get("authorization")))
        if caller is None:
            return unauthenticated(
                "Send `Authorization: Bearer <token>` with a valid token."
                if request.headers.get("authorization")
                else "Authentication required: send `Authorization: Bearer <token>`."
            )
        if request.method == "POST" and (refused := await self.check_body(request)):
            return refused
        return await self.run(request, context=Context(self.services, caller))

    async def check_body(self, request: Request) -> Response | None:
        """Refuse a body that is not one JSON object before Strawberry sees it."""
        if "application/json" not in request.headers.get("content-type", ""):
            return error_response(
                415, "Send the operation as application/json.", "UNSUPPORTED_MEDIA_TYPE"
            )
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            # Also invalid UTF-8 and nesting deeper than the parser allows.
            return error_response(400, "The body is not valid JSON.", "BAD_REQUEST")
        if not isinstance(data, dict):
            return error_response(
                400, "The body must be a JSON object with a `query`.", "BAD_REQUEST"
            )
        return None

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
        caller = await self.authenticator.caller(credentials)
        if caller is None:
            if credentials.presented:
                raise SocketRefused(CLOSE_UNKNOWN_TOKEN, "Forbidden: unknown token")
            raise SocketRefused(CLOSE_NO_TOKEN, "Unauthorized: no token")
        context.caller = caller
        return NO_ACK_PAYLOAD


def sandbox_enabled(container: Container) -> bool:
    """The sandbox mutations drive the simulated CA: on only when asked for and running."""
    return container.settings.sandbox and container.sim_ca is not None


def api_services(container: Container) -> Services:
    return Services(
        certificates=container.service,
        reader=SqlCertificateReader(container.engine),
        changes=container.broker,
        sandbox=container.sim_ca if sandbox_enabled(container) else None,
    )


def graphql_endpoint(container: Container) -> GraphQLEndpoint:
    settings: Settings = container.settings
    schema = build_schema(
        sandbox_enabled(container),
        production=settings.env == "production",
        # GraphiQL is of no use without introspection: turning it on turns that on.
        introspection=settings.introspection_enabled or settings.graphiql_enabled,
    )
    return GraphQLEndpoint(
        schema,
        api_services(container),
        Authenticator(container.tenants, auth_off=settings.auth == "off"),
        graphiql=settings.graphiql_enabled,
        max_body_bytes=settings.max_body_bytes,
    )


def graphql_routes(container: Container) -> list[BaseRoute]:
    endpoint = graphql_endpoint(container)
    return [Route("/graphql", endpoint), WebSocketRoute("/graphql", endpoint)]
