"""Tables of the customers domain: customers, the identities that find them across channels,
their orders (a copy of the figures the profile needs), profiles, tags and risk flags.

Personal data appears only as keyed blind indexes (`customer_identity.value`) and masked forms;
the clear values stay encrypted on the orders (docs/adr/0006).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime

IDENTITY_KINDS = ("phone_bidx", "platform_buyer")
FLAG_KINDS = ("discount_over_limit", "same_sku_burst")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Customer(Base):
    """One buyer, however many channels they buy on. A customer merged into another keeps its
    row (old ids keep resolving) with `merged_into_id` set and owns nothing any more."""

    __tablename__ = "customer"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name_masked: Mapped[str] = mapped_column(String(64))
    phone_masked: Mapped[str] = mapped_column(String(32))
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("customer.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CustomerIdentity(Base):
    """A key that finds a customer: the phone's blind index, or a platform's buyer id (itself
    blind-indexed with its platform)."""

    __tablename__ = "customer_identity"
    __table_args__ = (
        UniqueConstraint("kind", "value"),
        CheckConstraint(_in("kind", IDENTITY_KINDS), name="kind_known"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customer.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))  # "" for phones
    masked: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CustomerOrder(Base):
    """An order of a customer with what the profile counts; amounts in the base currency."""

    __tablename__ = "customer_order"
    __table_args__ = (
        Index("ix_customer_order_customer_placed_at", "customer_id", "placed_at"),
        CheckConstraint("amount_minor >= 0", name="amount_non_negative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key to sales_order on purpose: an FK check takes a KEY SHARE lock on the order
    # row, which makes the scheduler's `FOR UPDATE SKIP LOCKED` scans skip busy orders.
    order_id: Mapped[int] = mapped_column(BigId, unique=True)
    order_no: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    amount_minor: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))  # the base currency
    skus: Mapped[list[str]] = mapped_column(JsonDoc)
    categories: Mapped[list[str]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(32))
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CustomerProfile(Base):
    """Figures over the last N days (90 by default), recomputed from customer_order rows of one
    customer whenever one of them changes, and when an order ages out (`next_ageing_at`)."""

    __tablename__ = "customer_profile"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True
    )
    orders_90d: Mapped[int] = mapped_column(Integer)
    spend_90d_minor: Mapped[int] = mapped_column(BigId)
    aov_90d_minor: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))
    returns_30d: Mapped[int] = mapped_column(Integer)
    channels: Mapped[list[str]] = mapped_column(JsonDoc)
    favourite_categories: Mapped[list[str]] = mapped_column(JsonDoc)
    risk_flags: Mapped[list[str]] = mapped_column(JsonDoc)
    last_order_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The next moment a figure changes by time alone (an order or a refund leaves its window).
    next_ageing_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CustomerTag(Base):
    __tablename__ = "customer_tag"
    __table_args__ = (Index("ix_customer_tag_tag", "tag"),)

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CustomerFlag(Base):
    """A risk flag raised by one order (at most one per order and kind), with the exception
    case it opened."""

    __tablename__ = "customer_flag"
    __table_args__ = (
        UniqueConstraint("order_id", "kind"),
        CheckConstraint(_in("kind", FLAG_KINDS), name="kind_known"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customer.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[int] = mapped_column(BigId)  # no FK to sales_order, as customer_order
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    case_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
