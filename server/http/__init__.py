"""Server layer, HTTP edge: the ASGI app and the GraphQL endpoint (HTTP, WebSocket), guarded."""
