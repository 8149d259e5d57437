"""Event schemas the channels domain publishes (customers consume them)."""

from __future__ import annotations

from pydantic import BaseModel

from ordertally.events.registry import callback_event, event_schema


@event_schema("ChannelOrderIngested", 1)
class ChannelOrderIngested(BaseModel):
    """A platform order was stored (created, or changed on the platform side)."""

    order_id: int
    order_no: str
    account: str  # channel account code
    platform: str
    external_id: str
    created: bool  # False when an already known order was updated
    buyer_platform_id: str  # "" when the platform gives none
    categories: list[str]  # the lines' categories as the platform gave them ("" dropped)


@event_schema("ChannelWebhookReceived", 1)
class ChannelWebhookReceived(BaseModel):
    """A platform webhook was stored in the channel inbox; the worker applies it."""

    receipt_id: int
    account: str
    topic: str


callback_event("ChannelWebhookReceived")
