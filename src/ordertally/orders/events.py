"""Event schemas the orders domain publishes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from ordertally.events.registry import event_schema
from ordertally.orders.state_machine import TRANSITIONS


@event_schema("OrderCreated", 1)
class OrderCreated(BaseModel):
    order_id: int
    order_no: str
    channel: str
    external_id: str | None
    status: str
    currency: str
    total_minor: int
    base_currency: str
    fx_rate: str
    line_count: int
    created_at: datetime


class OrderStatusChanged(BaseModel):
    """Payload shared by every transition event (OrderPaid, OrderClosed, ...)."""

    order_id: int
    order_no: str
    transition: str
    from_status: str | None
    to_status: str
    version: int
    actor_kind: str
    actor_id: str
    evidence_ref: str | None
    occurred_at: datetime


for _transition in TRANSITIONS:
    event_schema(_transition.event_type, 1)(OrderStatusChanged)
