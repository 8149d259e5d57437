"""What the worker loads for this domain: its event schemas, consumers and periodic jobs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.events.registry import Envelope, batch_consumer, consumer
from ordertally.fulfillment import events as fulfillment_events  # noqa: F401  (schemas)
from ordertally.notify import (
    jobs,  # noqa: F401  (registers the sender)
    service,
)
from ordertally.notify.templates import EVENTS
from ordertally.orders import events as order_events  # noqa: F401  (schemas)


@consumer("notify.plan", *EVENTS)
async def plan_notifications(session: AsyncSession, envelope: Envelope) -> None:
    """Write the event's messages to the send log (once per event and target)."""
    await service.plan(session, envelope)


@batch_consumer("notify.plan")
async def plan_notifications_batch(session: AsyncSession, envelopes: list[Envelope]) -> None:
    """The same for a worker batch's events at once (one INSERT for all their messages)."""
    await service.plan_many(session, envelopes)
