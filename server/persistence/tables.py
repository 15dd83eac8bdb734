"""Server layer: the database schema as SQLAlchemy 2 typed declarative rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(
        self, dialect: Dialect, coltype: Any
    ) -> Callable[[Any], datetime | None] | None:
        """On SQLite, the stored text (naive UTC, as written above) read straight into an aware
        datetime: one C call instead of a parse, then a `replace` (a page reads hundreds)."""
        generic = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite" or generic is None:
            return generic

        def process(value: Any) -> datetime | None:
            if isinstance(value, str):
                try:
                    return datetime.fromisoformat(value + "+00:00")
                except ValueError:
                    pass  # not the text SQLAlchemy writes: the general way
            return generic(value)

        return process


ID = String(32)
STATUS = String(40)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime]


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    # SHA-256 of the token: the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class CertificateRow(Base):
    __tablename__ = "certificates"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(8))
    domain_type: Mapped[str] = mapped_column(String(16))
    brand: Mapped[str] = mapped_column(String(100))
    domain_quota: Mapped[int]
    validity_years: Mapped[int]
    status: Mapped[str] = mapped_column(STATUS)
    version: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    domain: Mapped[str | None] = mapped_column(String(253))
    additional_domains: Mapped[list[Any]] = mapped_column(JSON)
    # Lower-case name and domains, for the literal case-insensitive search filter.
    search_text: Mapped[str] = mapped_column(Text)
    validation_method: Mapped[str | None] = mapped_column(String(8))
    validation_records: Mapped[list[Any] | None] = mapped_column(JSON)
    validation_verified_at: Mapped[datetime | None]
    organization_name: Mapped[str | None] = mapped_column(String(200))
    organization_country: Mapped[str | None] = mapped_column(String(2))
    organization_verified_at: Mapped[datetime | None]
    last_withdrawal_id: Mapped[str | None] = mapped_column(ID)
    issued_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    ca_order_id: Mapped[str | None] = mapped_column(String(200))
    ca_cursor: Mapped[int] = mapped_column(Integer, default=0)
    pending_domains: Mapped[list[Any]] = mapped_column(JSON)
    addition_return_status: Mapped[str | None] = mapped_column(STATUS)
    deletion_return_status: Mapped[str | None] = mapped_column(STATUS)
    # When the worker should next ask the CA about this certificate; null when nothing is pending.
    ca_next_poll_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_certificates_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_certificates_tenant_updated", "tenant_id", "updated_at", "id"),
        Index("ix_certificates_tenant_expires", "tenant_id", "expires_at", "id"),
        Index("ix_certificates_tenant_domain", "tenant_id", "domain", "id"),
        Index("ix_certificates_tenant_name", "tenant_id", "name", "id"),
        Index("ix_certificates_tenant_status", "tenant_id", "status"),
        Index(
            "ix_certificates_ca_next_poll_at",
            "ca_next_poll_at",
            postgresql_where=text("ca_next_poll_at IS NOT NULL"),
            sqlite_where=text("ca_next_poll_at IS NOT NULL"),
        ),
        Index(
            "ix_certificates_expires_issued",
            "expires_at",
            postgresql_where=text("status = 'ISSUED'"),
            sqlite_where=text("status = 'ISSUED'"),
        ),
    )


class CertificateEventRow(Base):
    __tablename__ = "certificate_events"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    certificate_id: Mapped[str] = mapped_column(ForeignKey("certificates.id"))
    version: Mapped[int]
    kind: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str | None] = mapped_column(STATUS)
    to_status: Mapped[str] = mapped_column(STATUS)
    at: Mapped[datetime]
    message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ux_certificate_events_cert_version", "certificate_id", "version", unique=True),
    )


class ChangeFeedRow(Base):
    """The status changes (events whose status differs from the one before), numbered in the
    order their transactions committed: what subscribers resume from (see
    `server.persistence.changes`). Events themselves are ordered by their time, which is
    stamped before the transaction commits and so can run ahead of commit order."""

    __tablename__ = "change_feed"

    # SQLite makes only INTEGER PRIMARY KEY the rowid (AUTOINCREMENT: never reused).
    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(ID)
    certificate_id: Mapped[str] = mapped_column(ForeignKey("certificates.id"))
    version: Mapped[int]

    __table_args__ = (
        Index("ix_change_feed_tenant_sequence", "tenant_id", "sequence"),
        Index("ux_change_feed_cert_version", "certificate_id", "version", unique=True),
        {"sqlite_autoincrement": True},
    )


class WithdrawalRow(Base):
    __tablename__ = "withdrawals"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    certificate_id: Mapped[str] = mapped_column(ForeignKey("certificates.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    previous_status: Mapped[str] = mapped_column(STATUS)
    requested_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class CertificateDocumentRow(Base):
    """The certificate a CA issued: its PEM chain and the facts read from the leaf.

    Apart from `certificates`, so listing certificates never reads kilobytes of PEM."""

    __tablename__ = "certificate_documents"

    certificate_id: Mapped[str] = mapped_column(ForeignKey("certificates.id"), primary_key=True)
    pem: Mapped[str] = mapped_column(Text)
    serial_number: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    dns_names: Mapped[list[Any]] = mapped_column(JSON)
    sha256_fingerprint: Mapped[str] = mapped_column(String(64))


class IdempotencyKeyRow(Base):
    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    operation: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    certificate_id: Mapped[str] = mapped_column(ID)
    withdrawal_id: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(index=True)


# ---- The simulated CA's own records: it is "another company", with its own tables.


class SimCaOrderRow(Base):
    __tablename__ = "simca_orders"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(8))
    domains: Mapped[list[Any]] = mapped_column(JSON)
    records: Mapped[list[Any]] = mapped_column(JSON)
    stage: Mapped[str] = mapped_column(String(16))
    review: Mapped[str] = mapped_column(String(16))
    suspended_review: Mapped[str] = mapped_column(String(16))
    pending_domains: Mapped[list[Any]] = mapped_column(JSON)
    review_started_at: Mapped[datetime | None] = mapped_column(index=True)
    issued_at: Mapped[datetime | None]
    last_seq: Mapped[int]
    created_at: Mapped[datetime]
    validity_years: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    # The certificate it issued (chain PEM) and the key it made for it.
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    private_key_pem: Mapped[str | None] = mapped_column(Text)


class DecisionColumns:
    """A CA's log of decisions, one row per decision on an order (after its `order_id`, which
    each log keys to its own orders table)."""

    seq: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    issued_at: Mapped[datetime | None]
    records: Mapped[list[Any]] = mapped_column(JSON)
    message: Mapped[str | None] = mapped_column(Text)
    certificate_pem: Mapped[str | None] = mapped_column(Text)


class SimCaDecisionRow(DecisionColumns, Base):
    __tablename__ = "simca_decisions"

    order_id: Mapped[str] = mapped_column(ForeignKey("simca_orders.id"), primary_key=True)


class SimCaSettingRow(Base):
    __tablename__ = "simca_settings"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class SimCaRequestRow(Base):
    """Each request the simulated CA answered, by its idempotency key: a retried call with the
    same key gets the stored answer and changes nothing (`calls` counts the attempts)."""

    __tablename__ = "simca_requests"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(32), index=True)
    operation: Mapped[str] = mapped_column(String(32))
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    calls: Mapped[int]
    created_at: Mapped[datetime]


class SimCaRootRow(Base):
    """The simulated CA's test root, made once on first issue and kept."""

    __tablename__ = "simca_roots"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    private_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


# ---- The ACME adapter's records: what it needs to follow each order at the ACME server.


class AcmeOrderRow(Base):
    __tablename__ = "acme_orders"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    finalize_url: Mapped[str] = mapped_column(String(500))
    authorizations: Mapped[list[Any]] = mapped_column(JSON)
    domains: Mapped[list[Any]] = mapped_column(JSON)
    records: Mapped[list[Any]] = mapped_column(JSON)
    # The certificate's key, made by certgraph for the CSR; it never leaves the server.
    private_key_pem: Mapped[str] = mapped_column(Text)
    csr_pem: Mapped[str] = mapped_column(Text)
    # certgraph's side of the order (see server.ca.acme.Phase) and what it is closed for.
    phase: Mapped[str] = mapped_column(String(16), index=True)
    closing_for: Mapped[str | None] = mapped_column(String(16))
    # When certgraph first answered the challenges: until then there is nothing to poll for.
    answered_at: Mapped[datetime | None]
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    last_seq: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AcmeDecisionRow(DecisionColumns, Base):
    __tablename__ = "acme_decisions"

    order_id: Mapped[str] = mapped_column(ForeignKey("acme_orders.id"), primary_key=True)
