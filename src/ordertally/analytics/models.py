"""Read models of the analytics domain: daily tallies, order timelines and the business events
fulfilment waits for, maintained by outbox consumers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime


class OrderDailyTally(Base):
    """Orders and amounts per local business day (merchant timezone), channel and currency."""

    __tablename__ = "order_daily_tally"

    day_date: Mapped[str] = mapped_column(String(10), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    orders_count: Mapped[int] = mapped_column(Integer)
    total_minor: Mapped[int] = mapped_column(BigId)


class OrderTimeline(Base):
    """When each order reached each stage (first time), where it shipped from and with whom,
    and when its fulfilment could really start; kept by an outbox consumer, rebuildable from
    the event log."""

    __tablename__ = "order_timeline"
    __table_args__ = (
        Index("ix_order_timeline_day_channel", "day_date", "channel"),
        Index("ix_order_timeline_created_at", "created_at"),
    )

    order_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(32), default="")
    currency: Mapped[str] = mapped_column(String(3), default="")
    total_minor: Mapped[int] = mapped_column(BigId, default=0)
    # The order's merchant-local business day (settings' time zone), as the daily tally.
    day_date: Mapped[str] = mapped_column(String(10), default="")
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    allocated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    picking_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    shipped_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The latest required business event, or the payment when none is required; None while a
    # required event is missing.
    fulfillment_start_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ship_by_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    warehouse: Mapped[str] = mapped_column(String(32), default="")
    carrier: Mapped[str] = mapped_column(String(32), default="")
    # The exception case types the order has ever had, as the delay-cause consumer last read
    # them (`delay_rows.encode_types`; "" for none): what its delay-cause rows were moved by.
    exception_types: Mapped[str] = mapped_column(Text, default="", server_default="")


class OrderDailyPaid(Base):
    """Orders paid per merchant-local day (the order's creation day, as the daily tally),
    channel and currency: the daily series' paid count. Moved by the timeline consumer as
    deltas when an order's first payment (or its day, channel or currency) becomes known
    (ADR 0043)."""

    __tablename__ = "order_daily_paid"

    day_date: Mapped[str] = mapped_column(String(10), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    orders: Mapped[int] = mapped_column(Integer)


class StageDelayStat(Base):
    """The stage table's delay causes pre-aggregated per merchant-local day (the order's
    creation day), channel ("*" for every channel), stage, dimension value (as the stage rows)
    and exception case type: orders over the stage's SLA that have (or had) a case of that
    type. Moved as deltas by the timeline consumer (a stage ends) and the delay-cause consumer
    (a case opens), an order's old contribution out and its new one in (ADR 0043)."""

    __tablename__ = "stage_delay_stat"

    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)  # all|warehouse|carrier
    day_date: Mapped[str] = mapped_column(String(10), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    dim_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    orders: Mapped[int] = mapped_column(Integer)


class StageDailyStat(Base):
    """Stage durations pre-aggregated per merchant-local day (the order's creation day), channel
    ("*" for every channel), stage, dimension value and log-scale duration bucket: orders,
    summed microseconds and orders over the stage's SLA. Kept by the timeline consumer as
    deltas (an order's old contribution out, its new one in); a period's stage table is the
    sum of its days' rows (ADR 0038)."""

    __tablename__ = "stage_daily_stat"

    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)  # all|warehouse|carrier
    day_date: Mapped[str] = mapped_column(String(10), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    dim_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    orders: Mapped[int] = mapped_column(Integer)
    sum_us: Mapped[int] = mapped_column(BigId)
    over_sla: Mapped[int] = mapped_column(Integer)


class FulfillmentEvent(Base):
    """A business event that fulfilment may wait for (production confirmed, design approved,
    customs cleared, presale released, the merchant's own types): one per order and type."""

    __tablename__ = "fulfillment_event"
    __table_args__ = (UniqueConstraint("order_no", "type"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_no: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(String(16))  # api | file | platform
    recorded_by: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FulfillmentRequirement(Base):
    """Which business events an order's fulfilment waits for (from an industry template or
    listed), and the platform's ship-by deadline."""

    __tablename__ = "fulfillment_requirement"

    order_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    template: Mapped[str] = mapped_column(String(40))
    required: Mapped[list[str]] = mapped_column(JsonDoc)
    ship_by_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    set_by: Mapped[str] = mapped_column(String(100))
    set_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AftersaleTimeline(Base):
    """When each after-sales case reached each of its stages (the earliest time of its audit
    trail), who was held responsible, its lines (SKU, units) and the refunds confirmed for it;
    kept by an outbox consumer over the after-sales events, rebuildable from the event log
    (ADR 0040)."""

    __tablename__ = "aftersale_timeline"
    __table_args__ = (Index("ix_aftersale_timeline_day_channel", "day_date", "channel"),)

    case_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_no: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    responsibility: Mapped[str] = mapped_column(String(16))  # "" while nobody is
    # The merchant-local day the case was requested on (its stage and KPI rows' day).
    day_date: Mapped[str] = mapped_column(String(10))
    requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    rejected_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # approved or rejected, whichever came first
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    returned_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    inspected_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # refunded, reshipped or exchanged, whichever came first
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    units: Mapped[int] = mapped_column(Integer)
    refunded_minor: Mapped[int] = mapped_column(BigId)
    # [[sku, units], ...] in line order
    lines: Mapped[list[list[Any]]] = mapped_column(JsonDoc)


class AftersaleDailyStat(Base):
    """After-sales KPIs pre-aggregated per merchant-local day (the case's request day),
    channel, dimension (all | type | responsibility | sku), value and currency: cases, units
    and refunds confirmed (minor units). Moved by the after-sales timeline consumer as deltas,
    like the stage rows (ADR 0040)."""

    __tablename__ = "aftersale_daily_stat"
    # Channel before day: a read takes one dimension and one channel ("*" or the caller's)
    # over a range of days.
    __table_args__ = (
        PrimaryKeyConstraint("dimension", "channel", "day_date", "dim_key", "currency"),
    )

    dimension: Mapped[str] = mapped_column(String(16))
    day_date: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str] = mapped_column(String(32))
    dim_key: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    cases: Mapped[int] = mapped_column(Integer)
    units: Mapped[int] = mapped_column(Integer)
    refund_minor: Mapped[int] = mapped_column(BigId)


class ShippedDailyStat(Base):
    """What the after-sales rate divides by: orders and units shipped per merchant-local day
    (of the first shipment), channel and dimension (all | sku); moved by the order timeline
    consumer when an order's shipped time or channel changes (ADR 0040)."""

    __tablename__ = "shipped_daily_stat"
    __table_args__ = (PrimaryKeyConstraint("dimension", "channel", "day_date", "dim_key"),)

    dimension: Mapped[str] = mapped_column(String(16))
    day_date: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str] = mapped_column(String(32))
    dim_key: Mapped[str] = mapped_column(String(64))
    orders: Mapped[int] = mapped_column(Integer)
    units: Mapped[int] = mapped_column(Integer)
