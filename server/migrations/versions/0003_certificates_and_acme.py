"""Issued certificates as documents; the simulated CA signs real ones with its test root; the
ACME adapter's orders and decision log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=32)
URL = sa.String(length=500)
# What server.persistence.tables.UtcDateTime stores; revisions do not import application code.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "certificate_documents",
        sa.Column("certificate_id", ID, nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("serial_number", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_before", UTC_DATETIME, nullable=False),
        sa.Column("not_after", UTC_DATETIME, nullable=False),
        sa.Column("dns_names", sa.JSON(), nullable=False),
        sa.Column("sha256_fingerprint", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["certificate_id"], ["certificates.id"]),
        sa.PrimaryKeyConstraint("certificate_id"),
    )

    with op.batch_alter_table("simca_orders") as batch:
        batch.add_column(
            sa.Column("validity_years", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
        batch.add_column(sa.Column("certificate_pem", sa.Text(), nullable=True))
        batch.add_column(sa.Column("private_key_pem", sa.Text(), nullable=True))
    with op.batch_alter_table("simca_decisions") as batch:
        batch.add_column(sa.Column("certificate_pem", sa.Text(), nullable=True))
    op.create_table(
        "simca_roots",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )

    op.create_table(
        "acme_orders",
        sa.Column("id", ID, nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("url", URL, nullable=False),
        sa.Column("finalize_url", URL, nullable=False),
        sa.Column("authorizations", sa.JSON(), nullable=False),
        sa.Column("domains", sa.JSON(), nullable=False),
        sa.Column("records", sa.JSON(), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("csr_pem", sa.Text(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("closing_for", sa.String(length=16), nullable=True),
        sa.Column("answered_at", UTC_DATETIME, nullable=True),
        sa.Column("certificate_pem", sa.Text(), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
    )
    op.create_index("ix_acme_orders_phase", "acme_orders", ["phase"])
    op.create_table(
        "acme_decisions",
        sa.Column("order_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("issued_at", UTC_DATETIME, nullable=True),
        sa.Column("records", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("certificate_pem", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["acme_orders.id"]),
        sa.PrimaryKeyConstraint("order_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("acme_decisions")
    op.drop_index("ix_acme_orders_phase", table_name="acme_orders")
    op.drop_table("acme_orders")
    op.drop_table("simca_roots")
    with op.batch_alter_table("simca_decisions") as batch:
        batch.drop_column("certificate_pem")
    with op.batch_alter_table("simca_orders") as batch:
        batch.drop_column("private_key_pem")
        batch.drop_column("certificate_pem")
        batch.drop_column("validity_years")
    op.drop_table("certificate_documents")
