"""Certificate search answered from a trigram index: pg_trgm on PostgreSQL, FTS5 on SQLite.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite. `certificates` has a string primary key, so its rowids may change on VACUUM: the FTS
# rows are keyed by an INTEGER PRIMARY KEY of their own, mapped to the certificate id. The FTS
# table is contentless (the text stays in `certificates.search_text`), so a row leaves it by
# the 'delete' command with the text it was indexed with. Already lower-cased text: the
# tokenizer folds nothing, and a phrase of trigrams matches exactly the substrings.
SQLITE_UPGRADE = [
    """
    CREATE TABLE certificate_search_keys (
        key INTEGER PRIMARY KEY,
        certificate_id VARCHAR(32) NOT NULL UNIQUE
    )
    """,
    """
    CREATE VIRTUAL TABLE certificate_search USING fts5(
        search_text, content='', columnsize=0, tokenize='trigram case_sensitive 1'
    )
    """,
    "INSERT INTO certificate_search_keys (certificate_id) SELECT id FROM certificates",
    """
    INSERT INTO certificate_search (rowid, search_text)
    SELECT k.key, c.search_text
    FROM certificate_search_keys AS k JOIN certificates AS c ON c.id = k.certificate_id
    """,
    """
    CREATE TRIGGER certificate_search_insert AFTER INSERT ON certificates BEGIN
        INSERT INTO certificate_search_keys (certificate_id) VALUES (new.id);
        INSERT INTO certificate_search (rowid, search_text) VALUES (
            (SELECT key FROM certificate_search_keys WHERE certificate_id = new.id),
            new.search_text
        );
    END
    """,
    """
    CREATE TRIGGER certificate_search_update AFTER UPDATE OF search_text ON certificates
    WHEN old.search_text IS NOT new.search_text BEGIN
        INSERT INTO certificate_search (certificate_search, rowid, search_text) VALUES (
            'delete',
            (SELECT key FROM certificate_search_keys WHERE certificate_id = old.id),
            old.search_text
        );
        INSERT INTO certificate_search (rowid, search_text) VALUES (
            (SELECT key FROM certificate_search_keys WHERE certificate_id = new.id),
            new.search_text
        );
    END
    """,
    """
    CREATE TRIGGER certificate_search_delete AFTER DELETE ON certificates BEGIN
        INSERT INTO certificate_search (certificate_search, rowid, search_text) VALUES (
            'delete',
            (SELECT key FROM certificate_search_keys WHERE certificate_id = old.id),
            old.search_text
        );
        DELETE FROM certificate_search_keys WHERE certificate_id = old.id;
    END
    """,
]

SQLITE_DOWNGRADE = [
    "DROP TRIGGER certificate_search_delete",
    "DROP TRIGGER certificate_search_update",
    "DROP TRIGGER certificate_search_insert",
    "DROP TABLE certificate_search",
    "DROP TABLE certificate_search_keys",
]

# PostgreSQL: pg_trgm is a trusted extension (PostgreSQL 13+), so the database owner may create
# it. The GIN index answers `search_text LIKE '%…%'` as it stands: no query change.
POSTGRESQL_UPGRADE = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_certificates_search_trgm ON certificates USING gin (search_text gin_trgm_ops)",
]

# The extension stays: other objects in the database may have come to use it.
POSTGRESQL_DOWNGRADE = ["DROP INDEX ix_certificates_search_trgm"]


def upgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    for statement in SQLITE_UPGRADE if sqlite else POSTGRESQL_UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    for statement in SQLITE_DOWNGRADE if sqlite else POSTGRESQL_DOWNGRADE:
        op.execute(statement)
