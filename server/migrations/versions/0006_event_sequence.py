"""Status changes numbered in commit order (`change_feed`), what subscription cursors hold.

Existing status changes are numbered in the order cursors used to follow (time, certificate
id, version), so a cursor handed out before this revision names the same place in the feed.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-29 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=32)

# Explicit numbers (not the column's default in the order rows arrive), then the PostgreSQL
# sequence moved past them; SQLite's AUTOINCREMENT counter follows the largest by itself.
_BACKFILL = """
INSERT INTO change_feed (sequence, tenant_id, certificate_id, version)
SELECT ROW_NUMBER() OVER (ORDER BY e.at, e.certificate_id, e.version),
       c.tenant_id, e.certificate_id, e.version
FROM certificate_events e JOIN certificates c ON c.id = e.certificate_id
WHERE e.from_status IS NULL OR e.from_status <> e.to_status
"""
_PG_SEQUENCE_PAST_BACKFILL = """
SELECT setval(pg_get_serial_sequence('change_feed', 'sequence'),
              COALESCE((SELECT MAX(sequence) FROM change_feed), 0) + 1, false)
"""


def upgrade() -> None:
    op.create_table(
        "change_feed",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("certificate_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["certificate_id"], ["certificates.id"]),
        sa.PrimaryKeyConstraint("sequence"),
        sqlite_autoincrement=True,
    )
    op.execute(_BACKFILL)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_SEQUENCE_PAST_BACKFILL)
    op.create_index("ix_change_feed_tenant_sequence", "change_feed", ["tenant_id", "sequence"])
    op.create_index(
        "ux_change_feed_cert_version", "change_feed", ["certificate_id", "version"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ux_change_feed_cert_version", table_name="change_feed")
    op.drop_index("ix_change_feed_tenant_sequence", table_name="change_feed")
    op.drop_table("change_feed")
