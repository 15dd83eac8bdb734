"""The GraphQL engine: how documents are limited, cached, executed and their errors reported.

It knows Strawberry and graphql-core, not the API: `server.http.schema` puts it together with the
resolvers. See README "How it is built".
"""
