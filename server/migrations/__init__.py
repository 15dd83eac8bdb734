"""Server layer: the Alembic migration scripts (configured from code by server.migrate)."""
