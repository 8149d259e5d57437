"""Event consumers of the customers domain (and the event schemas they read).

Every consumer re-reads the order and writes absolute values (see customers/service.py), so a
replayed event changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import events as channel_events  # noqa: F401  (registers the schema)
from ordertally.core import clock
from ordertally.customers import service
from ordertally.events.registry import Envelope, batch_consumer, consumer
from ordertally.orders import events as order_events  # noqa: F401  (registers the schemas)
from ordertally.orders.errors import OrderNotFound
from ordertally.orders.state_machine import TRANSITIONS


def _kind(status: str) -> str:
    return "bought" if status in service.BOUGHT else status if status == service.REFUNDED else ""


# The status changes the profile's figures depend on: into or out of "bought", or refunded
# (paid, refunded, reopened). Moves within "bought" (allocated, shipped, delivered...) change
# no figure, so they are not consumed: that spares ~10 queries per order per step.
STATUS_EVENTS = tuple(
    sorted(
        {
            t.event_type
            for t in TRANSITIONS
            if any(_kind(s.value) != _kind(t.target.value) for s in t.sources)
        }
    )
)


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return clock.as_utc(value)
    if isinstance(value, str) and value:
        return clock.as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return None


@consumer("customers.link_order", "OrderCreated", *STATUS_EVENTS)
async def link_order(session: AsyncSession, envelope: Envelope) -> None:
    """Link a new order to its customer by phone, or refresh it after a status change."""
    try:
        await service.link_order(
            session,
            str(envelope.payload["order_no"]),
            event_at=_when(envelope.payload.get("occurred_at"))
            or clock.as_utc(envelope.occurred_at),
        )
    except OrderNotFound:
        return  # deleted since; nothing to count


@batch_consumer("customers.link_order")
async def link_orders(session: AsyncSession, envelopes: list[Envelope]) -> None:
    """The same for a batch: each order once, as of its latest event in the batch."""
    latest: dict[str, datetime | None] = {}
    for envelope in envelopes:  # outbox order: a later event of an order comes later
        latest[str(envelope.payload["order_no"])] = _when(
            envelope.payload.get("occurred_at")
        ) or clock.as_utc(envelope.occurred_at)
    await service.link_orders(session, latest)


@consumer("customers.link_channel_buyer", "ChannelOrderIngested")
async def link_channel_buyer(session: AsyncSession, envelope: Envelope) -> None:
    """Link a platform order by the platform's buyer id and record its categories."""
    payload = envelope.payload
    buyer_id = str(payload.get("buyer_platform_id") or "")
    try:
        await service.link_order(
            session,
            str(payload["order_no"]),
            buyer=service.BuyerId(str(payload["platform"]), buyer_id) if buyer_id else None,
            categories=[str(c) for c in payload.get("categories") or []],
            # Not in ChannelOrderIngested v1; taken when a later version carries it.
            placed_at=_when(payload.get("placed_at")),
            event_at=clock.as_utc(envelope.occurred_at),
        )
    except OrderNotFound:
        return


@consumer("customers.count_return", "AftersaleRequested")
async def count_return(session: AsyncSession, envelope: Envelope) -> None:
    """An after-sales return (return and refund, refused delivery, exchange) counts in the
    customer's 30-day returns (the seeds' "> 3 returns in 30 days" rule reads it)."""
    payload = envelope.payload
    if payload.get("type") not in service.RETURN_CASE_TYPES:
        return
    at = _when(payload.get("occurred_at")) or clock.as_utc(envelope.occurred_at)
    try:
        await service.link_order(session, str(payload["order_no"]), event_at=at, returned_at=at)
    except OrderNotFound:
        return
