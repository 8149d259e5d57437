"""Event consumers of the fulfillment domain (and its event schemas)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

import ordertally.fulfillment.events  # noqa: F401
from ordertally.core.settings import get_settings
from ordertally.events.registry import Envelope, batch_consumer, consumer
from ordertally.fulfillment import allocation


@consumer("fulfillment.allocate", "OrderPaid", "OrderReopenedPaid", stock=True)
async def allocate_paid_order(session: AsyncSession, envelope: Envelope) -> None:
    """A paid order gets its shipments (one per warehouse of its reservations) and moves to
    allocated; an order on hold waits for the sweep (jobs.allocate_waiting)."""
    if get_settings().fulfillment_auto_allocate:
        await allocation.allocate(session, int(envelope.payload["order_id"]))


@batch_consumer("fulfillment.allocate")
async def allocate_paid_orders(session: AsyncSession, envelopes: list[Envelope]) -> None:
    """The same for a batch of events: the orders allocated together."""
    if get_settings().fulfillment_auto_allocate:
        await allocation.allocate_many(
            session, sorted({int(e.payload["order_id"]) for e in envelopes})
        )
