"""The simulated CA remembers each request by its idempotency key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 21:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "simca_requests",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_simca_requests_order_id", "simca_requests", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_simca_requests_order_id", table_name="simca_requests")
    op.drop_table("simca_requests")
