"""Orders, their lines, their audit trail, PII access log and the saved searches of the
orders screen."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime
from ordertally.orders.state_machine import STATUSES

_STATUS_LIST = ", ".join(f"'{s}'" for s in STATUSES)


class SalesOrder(Base):
    __tablename__ = "sales_order"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status_known"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("discount_minor >= 0", name="discount_non_negative"),
        CheckConstraint("subtotal_minor >= discount_minor", name="discount_within_subtotal"),
        CheckConstraint(
            "total_minor = subtotal_minor - discount_minor"
            " + shipping_minor + tax_minor + fee_minor",
            name="total_adds_up",
        ),
        CheckConstraint(
            "shipping_minor >= 0 AND tax_minor >= 0 AND fee_minor >= 0", name="charges_non_negative"
        ),
        Index("ix_sales_order_created_at_id", "created_at", "id"),
        # The dashboard's last-day counts per status read this index alone (issue 20): without
        # it PostgreSQL walks all of (status, created_at) to group by status.
        Index("ix_sales_order_created_at_status", "created_at", "status"),
        Index("ix_sales_order_status_created_at", "status", "created_at"),
        Index("ix_sales_order_status_deadline", "status", "payment_deadline_at"),
        # No index on `fingerprint`: the duplicate check reads `order_fingerprint` (migration
        # 0039, ADR 0056).
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int] = mapped_column(BigId)
    discount_minor: Mapped[int] = mapped_column(BigId)
    total_minor: Mapped[int] = mapped_column(BigId)
    base_currency: Mapped[str] = mapped_column(String(3))
    fx_rate: Mapped[str] = mapped_column(String(32))
    # What the buyer paid on top of the lines (minor units, order currency): total = subtotal -
    # discount + shipping + tax + fee; base_total_minor is total at the rate locked at creation.
    shipping_minor: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    tax_minor: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    fee_minor: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    base_total_minor: Mapped[int | None] = mapped_column(BigId, nullable=True)
    customer_name_enc: Mapped[str] = mapped_column(Text)
    customer_name_masked: Mapped[str] = mapped_column(String(64))
    customer_phone_enc: Mapped[str] = mapped_column(Text)
    customer_phone_bidx: Mapped[str] = mapped_column(String(64))
    customer_phone_masked: Mapped[str] = mapped_column(String(32))
    # Neither phone column is indexed: orders are found by phone through the search index's
    # blind tokens, customers through `customer_identity` (migration 0038).
    customer_phone_last4: Mapped[str] = mapped_column(String(4))
    shipping_address_enc: Mapped[str] = mapped_column(Text)
    ship_name_masked: Mapped[str] = mapped_column(String(64))
    ship_phone_masked: Mapped[str] = mapped_column(String(32))
    ship_province: Mapped[str] = mapped_column(String(32))
    ship_city: Mapped[str] = mapped_column(String(64))
    ship_district: Mapped[str] = mapped_column(String(64))
    # What makes two keyless orders twins (customer, lines, amount); the duplicate check reads
    # its copy in `order_fingerprint`, kept only for the duplicate window.
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(100))
    payment_deadline_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The waybill numbers of its shipped parcels, space separated (exports, search); written
    # with the shipment in the same transaction.
    waybill_nos: Mapped[str] = mapped_column(String(500), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # What the buyer sees beside the status (海关查验中), set by batch actions and rules.
    sub_status: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    # The seller's remark (卖家备注), edited from the review queue.
    remark: Mapped[str | None] = mapped_column(String(500), nullable=True, default=None)


class OrderFingerprint(Base):
    """The duplicate fingerprint of each order created in the last duplicate window: the keyless
    duplicate check reads it instead of an index over every order's fingerprint, whose random
    keys put a random leaf of a table-sized index on each order's insert (ADR 0056). Written
    with the order; rows older than the window are purged (`purge_order_fingerprints`). No
    foreign key: a row outlives nothing but the window."""

    __tablename__ = "order_fingerprint"
    __table_args__ = (Index("ix_order_fingerprint_created_at", "created_at"),)

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)


class OrderLine(Base):
    __tablename__ = "order_line"
    __table_args__ = (
        UniqueConstraint("order_id", "line_no"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price_minor >= 0", name="price_non_negative"),
        CheckConstraint("discount_minor >= 0", name="discount_non_negative"),
        CheckConstraint(
            "total_minor = quantity * unit_price_minor - discount_minor", name="total_adds_up"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id", ondelete="CASCADE"))
    line_no: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_minor: Mapped[int] = mapped_column(BigId)
    discount_minor: Mapped[int] = mapped_column(BigId)
    total_minor: Mapped[int] = mapped_column(BigId)
    # What the catalogue said of the SKU when the order was placed (later edits leave it).
    sku_name: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    sku_name_en: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    sku_spec: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    sku_barcode: Mapped[str | None] = mapped_column(String(14), nullable=True, default=None)


class OrderEvent(Base):
    """One row per successful state change: the audit trail, never updated or deleted."""

    __tablename__ = "order_event"
    __table_args__ = (UniqueConstraint("order_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_status: Mapped[str] = mapped_column(String(32))
    actor_kind: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(100))
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    evidence_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PiiAccess(Base):
    """Who saw an order's unmasked personal data, when and why."""

    __tablename__ = "pii_access"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id", ondelete="CASCADE"))
    actor_id: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200))
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    accessed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FxRate(Base):
    """An exchange rate from `currency` to the base currency, in force from `effective_from`
    until a later row for the same pair (orders lock the rate in force when they are made)."""

    __tablename__ = "fx_rate"
    __table_args__ = (
        UniqueConstraint("currency", "base_currency", "effective_from"),
        CheckConstraint("currency <> base_currency", name="not_the_base"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    currency: Mapped[str] = mapped_column(String(3))
    base_currency: Mapped[str] = mapped_column(String(3))
    rate: Mapped[str] = mapped_column(String(32))  # a decimal string, 8 places
    effective_from: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SavedView(Base):
    """A named orders search (the search box's words and the filters) that a user saved for
    themself, or that an admin shared with everyone."""

    __tablename__ = "saved_view"
    __table_args__ = (
        UniqueConstraint("owner", "name"),
        Index("ix_saved_view_shared", "shared", "name"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))  # the username that saved it
    name: Mapped[str] = mapped_column(String(64))
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    query: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
