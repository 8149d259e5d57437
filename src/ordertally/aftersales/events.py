"""Event schemas the after-sales domain publishes (one per case transition, plus refunds)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from ordertally.aftersales.state_machine import TRANSITIONS
from ordertally.events.registry import event_schema


@event_schema("AftersaleRequested", 1)
class AftersaleRequested(BaseModel):
    case_id: int
    case_no: str
    order_no: str
    channel: str
    type: str
    refund_minor: int
    currency: str
    occurred_at: datetime


class AftersaleStatusChanged(BaseModel):
    """Payload shared by every case transition event (AftersaleApproved, ...)."""

    case_id: int
    case_no: str
    order_no: str
    type: str
    transition: str
    from_status: str
    to_status: str
    version: int
    actor: str
    occurred_at: datetime


for _transition in TRANSITIONS:
    event_schema(_transition.event_type, 1)(AftersaleStatusChanged)


@event_schema("AftersaleRefundConfirmed", 1)
class AftersaleRefundConfirmed(BaseModel):
    refund_id: int
    case_no: str
    order_no: str
    source: str
    provider: str
    out_refund_no: str
    amount_minor: int
    currency: str
    occurred_at: datetime
