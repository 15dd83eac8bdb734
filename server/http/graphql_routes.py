"""Server layer: the GraphQL endpoint put together from the container and the settings: the
schema with its limits, the services the resolvers call, and the routes at /graphql."""

from __future__ import annotations

from dataclasses import fields

from starlette.routing import BaseRoute, Route, WebSocketRoute

from graphql_engine.limits import QueryLimits
from resolvers.connection import DEFAULT_PAGE, MAX_PAGE
from resolvers.context import Services
from server.container import Container
from server.http.auth import Authenticator
from server.http.graphql_app import GraphQLEndpoint
from server.http.outages import is_outage
from server.http.rate_limit import TokenBuckets
from server.http.schema import build_schema
from server.http.subscription_quota import ConnectionQuota, SubscriptionQuota
from server.persistence.queries import SqlCertificateReader
from server.settings import Settings


def query_limits(settings: Settings) -> QueryLimits:
    """Each `CERTGRAPH_MAX_*` setting of the same name, and the API's own page sizes."""
    named = {
        f.name: getattr(settings, f.name)
        for f in fields(QueryLimits)
        if f.name.startswith("max_") and f.name != "max_page"
    }
    return QueryLimits(**named, default_page=DEFAULT_PAGE, max_page=MAX_PAGE)


def sandbox_enabled(container: Container) -> bool:
    """The sandbox mutations drive the simulated CA: on only when asked for and running."""
    return container.settings.sandbox and container.sim_ca is not None


def api_services(container: Container) -> Services:
    return Services(
        certificates=container.service,
        reader=SqlCertificateReader(container.db, search_index=container.settings.search_index),
        changes=container.broker,
        sandbox=container.sandbox if sandbox_enabled(container) else None,
    )


def graphql_endpoint(container: Container) -> GraphQLEndpoint:
    settings: Settings = container.settings
    schema = build_schema(
        sandbox_enabled(container),
        production=settings.env == "production",
        # GraphiQL is of no use without introspection: turning it on turns that on.
        introspection=settings.introspection_enabled or settings.graphiql_enabled,
        limits=query_limits(settings),
        is_outage=is_outage,
        fast_executor=settings.fast_executor,
    )
    return GraphQLEndpoint(
        schema,
        api_services(container),
        Authenticator(container.tenants, auth_off=settings.auth == "off"),
        graphiql=settings.graphiql_enabled,
        max_body_bytes=settings.max_body_bytes,
        max_document_bytes=settings.max_document_bytes,
        allowed_origins=settings.cors_origins,
        ws_init_timeout_seconds=settings.ws_init_timeout_seconds,
        quota=SubscriptionQuota(
            per_connection=settings.max_subscriptions_per_connection,
            per_tenant=settings.max_subscriptions_per_tenant,
        ),
        rate_limit=TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst),
        connections=ConnectionQuota(
            per_process=settings.max_ws_connections,
            per_tenant=settings.max_ws_connections_per_tenant,
        ),
    )


def graphql_routes(container: Container) -> list[BaseRoute]:
    endpoint = graphql_endpoint(container)
    return [Route("/graphql", endpoint), WebSocketRoute("/graphql", endpoint)]
