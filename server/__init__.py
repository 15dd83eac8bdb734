"""certgraph server: ASGI app, CLI, persistence and migrations."""
