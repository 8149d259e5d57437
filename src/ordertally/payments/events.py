"""Event schemas the payments domain publishes."""

from __future__ import annotations

from pydantic import BaseModel

from ordertally.events.registry import callback_event, event_schema


@event_schema("PaymentNotificationReceived", 1)
class PaymentNotificationReceived(BaseModel):
    """A verified notification was stored in the inbox; a worker applies it."""

    notification_id: int
    provider: str
    out_trade_no: str | None
    kind: str


callback_event("PaymentNotificationReceived")
