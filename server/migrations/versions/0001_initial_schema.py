"""Initial schema: tenants and tokens, certificates with their events, withdrawals and
idempotency keys, and the simulated CA's own tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 21:11:09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=32)
STATUS = sa.String(length=40)
# What server.persistence.tables.UtcDateTime stores; revisions do not import application code.
UTC_DATETIME = sa.DateTime(timezone=True)

POLL_DUE = "ca_next_poll_at IS NOT NULL"
ISSUED = "status = 'ISSUED'"


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_api_tokens_tenant_id", "api_tokens", ["tenant_id"])

    op.create_table(
        "certificates",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("domain_type", sa.String(length=16), nullable=False),
        sa.Column("brand", sa.String(length=100), nullable=False),
        sa.Column("domain_quota", sa.Integer(), nullable=False),
        sa.Column("validity_years", sa.Integer(), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=True),
        sa.Column("additional_domains", sa.JSON(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("validation_method", sa.String(length=8), nullable=True),
        sa.Column("validation_records", sa.JSON(), nullable=True),
        sa.Column("validation_verified_at", UTC_DATETIME, nullable=True),
        sa.Column("organization_name", sa.String(length=200), nullable=True),
        sa.Column("organization_country", sa.String(length=2), nullable=True),
        sa.Column("organization_verified_at", UTC_DATETIME, nullable=True),
        sa.Column("last_withdrawal_id", ID, nullable=True),
        sa.Column("issued_at", UTC_DATETIME, nullable=True),
        sa.Column("expires_at", UTC_DATETIME, nullable=True),
        sa.Column("ca_order_id", sa.String(length=200), nullable=True),
        sa.Column("ca_cursor", sa.Integer(), nullable=False),
        sa.Column("pending_domains", sa.JSON(), nullable=False),
        sa.Column("addition_return_status", STATUS, nullable=True),
        sa.Column("deletion_return_status", STATUS, nullable=True),
        sa.Column("ca_next_poll_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    for name, columns in [
        ("ix_certificates_tenant_created", ["tenant_id", "created_at", "id"]),
        ("ix_certificates_tenant_updated", ["tenant_id", "updated_at", "id"]),
        ("ix_certificates_tenant_expires", ["tenant_id", "expires_at", "id"]),
        ("ix_certificates_tenant_domain", ["tenant_id", "domain", "id"]),
        ("ix_certificates_tenant_name", ["tenant_id", "name", "id"]),
        ("ix_certificates_tenant_status", ["tenant_id", "status"]),
    ]:
        op.create_index(name, "certificates", columns)
    # Partial indexes: the worker's poll queue and the expiry sweep look at few rows.
    op.create_index(
        "ix_certificates_ca_next_poll_at",
        "certificates",
        ["ca_next_poll_at"],
        postgresql_where=sa.text(POLL_DUE),
        sqlite_where=sa.text(POLL_DUE),
    )
    op.create_index(
        "ix_certificates_expires_issued",
        "certificates",
        ["expires_at"],
        postgresql_where=sa.text(ISSUED),
        sqlite_where=sa.text(ISSUED),
    )

    op.create_table(
        "certificate_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("certificate_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("from_status", STATUS, nullable=True),
        sa.Column("to_status", STATUS, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["certificate_id"], ["certificates.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_certificate_events_cert_version",
        "certificate_events",
        ["certificate_id", "version"],
        unique=True,
    )

    op.create_table(
        "withdrawals",
        sa.Column("id", ID, nullable=False),
        sa.Column("certificate_id", ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.String(length=32), nullable=True),
        sa.Column("previous_status", STATUS, nullable=False),
        sa.Column("requested_at", UTC_DATETIME, nullable=False),
        sa.Column("resolved_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["certificate_id"], ["certificates.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_withdrawals_certificate_id", "withdrawals", ["certificate_id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("certificate_id", ID, nullable=False),
        sa.Column("withdrawal_id", ID, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "operation", "key"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])

    op.create_table(
        "simca_orders",
        sa.Column("id", ID, nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("domains", sa.JSON(), nullable=False),
        sa.Column("records", sa.JSON(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("review", sa.String(length=16), nullable=False),
        sa.Column("suspended_review", sa.String(length=16), nullable=False),
        sa.Column("pending_domains", sa.JSON(), nullable=False),
        sa.Column("review_started_at", UTC_DATETIME, nullable=True),
        sa.Column("issued_at", UTC_DATETIME, nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
    )
    op.create_index("ix_simca_orders_review_started_at", "simca_orders", ["review_started_at"])

    op.create_table(
        "simca_decisions",
        sa.Column("order_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("issued_at", UTC_DATETIME, nullable=True),
        sa.Column("records", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["simca_orders.id"]),
        sa.PrimaryKeyConstraint("order_id", "seq"),
    )

    op.create_table(
        "simca_settings",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; children go before the tables they reference.
    for table in [
        "simca_settings",
        "simca_decisions",
        "simca_orders",
        "idempotency_keys",
        "withdrawals",
        "certificate_events",
        "certificates",
        "api_tokens",
        "tenants",
    ]:
        op.drop_table(table)
