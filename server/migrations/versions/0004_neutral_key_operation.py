"""Idempotency keys name their operation in the domain's words, not the GraphQL field's.

Keys stored before this revision keep answering retries: their operation is renamed too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE idempotency_keys SET operation = 'withdraw_application' "
        "WHERE operation = 'withdrawApplication'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE idempotency_keys SET operation = 'withdrawApplication' "
        "WHERE operation = 'withdraw_application'"
    )
