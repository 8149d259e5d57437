"""Event consumers of the fulfillment domain (and its event schemas)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

import ordertally.fulfillment.events  # noqa: F401
from ordertally.core.settings import get_settings
from ordertally.events.registry import Envelope, batch_consumer, consumer
from ordertally.fulfillment import allocation


def _paid(envelope: Envelope) -> bool:
    """The event may make an order ready to allocate: a payment (`OrderPaid`), a reopening, a
    passed review (`OrderReviewPassed`), a new order created paid (`OrderCreated` of a
    platform order imported paid, `import_paid`) or a lifted hold (`ExceptionCaseClosed`: a
    blocking case resolved or cancelled). Before the last three were here, those orders waited
    for the minutely sweep, 200 at a time; it still takes lost events. Allocation itself skips
    an order that is not paid or still on another hold."""
    if envelope.type == "OrderCreated":
        return envelope.payload.get("status") == "paid"
    if envelope.type == "ExceptionCaseClosed":
        return bool(envelope.payload.get("blocking"))
    return True


@consumer(
    "fulfillment.allocate",
    "OrderPaid",
    "OrderReopenedPaid",
    "OrderCreated",
    "OrderReviewPassed",
    "ExceptionCaseClosed",
    stock=True,
)
async def allocate_paid_order(session: AsyncSession, envelope: Envelope) -> None:
    """A paid order gets its shipments (one per warehouse of its reservations) and moves to
    allocated; an order on hold waits for the sweep (jobs.allocate_waiting)."""
    if get_settings().fulfillment_auto_allocate and _paid(envelope):
        await allocation.allocate(session, int(envelope.payload["order_id"]))


@batch_consumer("fulfillment.allocate")
async def allocate_paid_orders(session: AsyncSession, envelopes: list[Envelope]) -> None:
    """The same for a batch of events: the orders allocated together."""
    order_ids = sorted({int(e.payload["order_id"]) for e in envelopes if _paid(e)})
    if get_settings().fulfillment_auto_allocate and order_ids:
        await allocation.allocate_many(session, order_ids)
