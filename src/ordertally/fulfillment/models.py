"""Tables of the fulfillment domain: shipments, their lines and their tracking events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, UtcDateTime
from ordertally.fulfillment.state_machine import STATUSES

# A shipment's life: the statuses and their moves are data in state_machine.py.
SHIPMENT_STATUSES: tuple[str, ...] = STATUSES
_STATUS_LIST = ", ".join(f"'{s}'" for s in SHIPMENT_STATUSES)


class Shipment(Base):
    """One parcel: the lines a warehouse sends to the buyer under one waybill."""

    __tablename__ = "shipment"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status_known"),
        UniqueConstraint("order_id", "warehouse_code", "seq"),
        Index("ix_shipment_order", "order_id"),
        Index("ix_shipment_waybill", "waybill_no", "company"),
        Index("ix_shipment_waybill_due", "status", "next_waybill_at"),
        Index("ix_shipment_subscribe_due", "status", "next_subscribe_at"),
        Index("ix_shipment_poll_due", "status", "next_poll_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id", ondelete="CASCADE"))
    order_no: Mapped[str] = mapped_column(String(32))
    warehouse_code: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(24))
    # The adapter that creates its waybill and tracks it ("kuaidi100"), or "manual" when the
    # warehouse brings its own waybill number.
    carrier: Mapped[str] = mapped_column(String(32))
    company: Mapped[str] = mapped_column(String(32))  # carrier company code, e.g. zhongtong
    waybill_no: Mapped[str | None] = mapped_column(String(64), nullable=True)
    waybill_label: Mapped[str] = mapped_column(String(200), default="")
    waybill_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_waybill_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    confirmed_by: Mapped[str] = mapped_column(String(100), default="")
    shipped_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    shipped_by: Mapped[str] = mapped_column(String(100), default="")
    subscribed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    subscribe_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_subscribe_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Tracking: the newest carrier event by event time, and when we last heard or asked.
    tracking_state_code: Mapped[str] = mapped_column(String(16), default="")
    last_event_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_news_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_polled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    next_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    stale_flagged_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ShipmentLine(Base):
    """Units of one order line in one shipment (from the order's committed reservations)."""

    __tablename__ = "shipment_line"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    shipment_id: Mapped[int] = mapped_column(
        ForeignKey("shipment.id", ondelete="CASCADE"), primary_key=True
    )
    order_line_id: Mapped[int] = mapped_column(
        ForeignKey("order_line.id", ondelete="CASCADE"), primary_key=True
    )
    line_no: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)


class TrackingEvent(Base):
    """One carrier scan, stored once whatever how often it is pushed or queried."""

    __tablename__ = "tracking_event"
    __table_args__ = (
        UniqueConstraint("company", "waybill_no", "occurred_at", "state_code"),
        Index("ix_tracking_event_shipment_time", "shipment_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipment.id", ondelete="CASCADE"))
    company: Mapped[str] = mapped_column(String(32))
    waybill_no: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(24))
    state_code: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    location: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(String(16))  # push | query
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
