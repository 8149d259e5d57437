"""Business events and stages as data: the event types fulfilment may wait for, the industry
templates that say which ones an order needs, the stages of the stage table and their SLAs."""

from __future__ import annotations

from datetime import timedelta

# Built-in business event types; a merchant's own types (lower-case words) are accepted too.
EVENT_TYPES = (
    "production_confirmed",  # 生产确认
    "design_approved",  # 设计稿确认
    "customs_cleared",  # 清关完成
    "presale_released",  # 预售开放发货
)

# Industry templates: the events an order of that kind waits for before it can be fulfilled.
INDUSTRY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "standard": (),
    "presale": ("presale_released",),
    "made_to_order": ("production_confirmed",),
    "presale_made_to_order": ("presale_released", "production_confirmed"),
    "custom_design": ("design_approved", "production_confirmed"),
    "cross_border": ("customs_cleared",),
}

# A carrier delivers on time within this much of shipping (the shipped → delivered SLA).
CARRIER_SLA = timedelta(hours=72)
# (stage, from column, to column, SLA) of order_timeline, in lifecycle order.
STAGES: tuple[tuple[str, str, str, timedelta], ...] = (
    ("pending_to_paid", "created_at", "paid_at", timedelta(minutes=30)),
    ("paid_to_allocated", "paid_at", "allocated_at", timedelta(hours=2)),
    ("allocated_to_picking", "allocated_at", "picking_at", timedelta(hours=4)),
    ("picking_to_shipped", "picking_at", "shipped_at", timedelta(hours=24)),
    ("shipped_to_delivered", "shipped_at", "delivered_at", CARRIER_SLA),
    ("delivered_to_completed", "delivered_at", "completed_at", timedelta(days=7)),
)
# Ship time: from the moment fulfilment could start (not from creation) to the first parcel.
SHIP_TIME = ("ship_time", "fulfillment_start_at", "shipped_at", timedelta(hours=48))
# Shipped after the platform's ship-by deadline: over an SLA of zero past the deadline (the
# pre-aggregated rows count orders with a deadline and those shipped after it).
SHIP_DEADLINE = ("ship_deadline", "ship_by_at", "shipped_at", timedelta(0))
DIMENSIONS = ("all", "channel", "warehouse", "carrier", "day")

# After-sales stages (of `aftersale_timeline`, ADR 0040), the ones a 售后 team is judged on:
# how fast a request is decided (审核), how long the buyer's parcel takes to come back, how
# fast the warehouse inspects a return (质检), how fast the money follows the goods, how long
# the buyer waits for an outcome (refund, reshipment or exchange), and the whole case.
AFTERSALE_STAGES: tuple[tuple[str, str, str, timedelta], ...] = (
    ("as_requested_to_decided", "requested_at", "decided_at", timedelta(hours=24)),
    ("as_approved_to_returned", "approved_at", "returned_at", timedelta(days=7)),
    ("as_returned_to_inspected", "returned_at", "inspected_at", timedelta(hours=24)),
    ("as_returned_to_refunded", "returned_at", "refunded_at", timedelta(hours=48)),
    ("as_requested_to_resolved", "requested_at", "resolved_at", timedelta(hours=72)),
    ("as_requested_to_closed", "requested_at", "closed_at", timedelta(days=10)),
)
AFTERSALE_DIMENSIONS = ("all", "channel", "type", "responsibility", "day")
# The after-sales KPIs' dimensions (kept per day and channel, so "channel" reads "all" rows).
KPI_DIMENSIONS = ("all", "channel", "sku", "responsibility", "type", "day")
