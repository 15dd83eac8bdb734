"""Server layer: the Alembic revisions, oldest first."""
