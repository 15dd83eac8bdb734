"""Server layer: persistence adapters (SQLAlchemy tables, repositories, unit of work)."""
