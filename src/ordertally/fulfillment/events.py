"""Event schemas the fulfillment domain publishes (notify and analytics consume them)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from ordertally.events.registry import event_schema


@event_schema("ShipmentShipped", 1)
class ShipmentShipped(BaseModel):
    """A shipment left the warehouse with a waybill number."""

    shipment_id: int
    order_id: int
    order_no: str
    warehouse: str
    carrier: str
    waybill_no: str
    tracking_url: str  # the customer's tracking page for the order
    shipped_at: datetime


@event_schema("ShipmentDelivered", 1)
class ShipmentDelivered(BaseModel):
    """The carrier reported the shipment signed for (签收)."""

    shipment_id: int
    order_id: int
    order_no: str
    carrier: str
    waybill_no: str
    tracking_url: str
    delivered_at: datetime


@event_schema("ShipmentTrackingException", 1)
class ShipmentTrackingException(BaseModel):
    """Tracking went wrong: refused/returned/problem parcel from the carrier, or no news (stale)."""

    shipment_id: int
    order_id: int
    order_no: str
    carrier: str
    waybill_no: str
    tracking_url: str
    reason: str  # tracking_stale | rejected | returned | problem | customs | carrier_exception
    detail: str  # the carrier's own words, or why we raised it
    occurred_at: datetime
