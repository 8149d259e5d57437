"""Warehouses, stock rows of the catalogue's SKUs (optionally spread over buckets), the
movement ledger and reservations. Database CHECKs make overselling and negative
reservations impossible."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime


class Warehouse(Base):
    __tablename__ = "warehouse"
    __table_args__ = (
        CheckConstraint("cost_factor > 0", name="cost_factor_positive"),
        CheckConstraint("priority >= 0", name="priority_non_negative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    province: Mapped[str] = mapped_column(String(32))
    city: Mapped[str] = mapped_column(String(64))
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    priority: Mapped[int] = mapped_column(Integer)
    # Relative shipping cost (1.0 = average); used to break ties between candidates.
    cost_factor: Mapped[float] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Stock(Base):
    """One bucket of a SKU's stock in a warehouse; most SKUs have a single bucket (0)."""

    __tablename__ = "stock"
    __table_args__ = (
        UniqueConstraint("warehouse_id", "sku", "bucket"),
        CheckConstraint("reserved >= 0", name="reserved_non_negative"),
        CheckConstraint("on_hand >= reserved", name="on_hand_covers_reserved"),
        CheckConstraint("safety_stock >= 0", name="safety_non_negative"),
        CheckConstraint("bucket >= 0", name="bucket_non_negative"),
        Index("ix_stock_sku", "sku"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    sku: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[int] = mapped_column(Integer)
    on_hand: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer)
    safety_stock: Mapped[int] = mapped_column(Integer)


class StockMovement(Base):
    """Every change of on hand, signed; on hand is always the sum of these."""

    __tablename__ = "stock_movement"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('receipt', 'adjustment', 'count', 'shipment', 'return')", name="kind_known"
        ),
        Index("ix_stock_movement_wh_sku", "warehouse_id", "sku"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    sku: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(100))
    order_id: Mapped[int | None] = mapped_column(
        ForeignKey("sales_order.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Reservation(Base):
    """Units of one stock bucket held for one order line: held → committed → consumed, or
    released. State changes are compare-and-set on `state`."""

    __tablename__ = "reservation"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "state IN ('held', 'committed', 'consumed', 'released')", name="state_known"
        ),
        Index("ix_reservation_order", "order_id"),
        Index("ix_reservation_state_expires", "state", "expires_at"),
        Index("ix_reservation_stock_state", "stock_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id", ondelete="CASCADE"))
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_line.id", ondelete="CASCADE"))
    stock_id: Mapped[int] = mapped_column(ForeignKey("stock.id"))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Allocation(Base):
    """Why an order's lines went to the warehouses they went to."""

    __tablename__ = "allocation"

    order_id: Mapped[int] = mapped_column(
        ForeignKey("sales_order.id", ondelete="CASCADE"), primary_key=True
    )
    strategy: Mapped[str] = mapped_column(String(200))
    explanation: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
