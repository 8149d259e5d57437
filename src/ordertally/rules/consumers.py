"""Event consumers of the rules domain: the order events that trigger rules (and the hook
that evaluates the `order.paid` rules in the payment transaction)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.events.registry import Envelope, batch_consumer, consumer
from ordertally.orders import events as order_events  # noqa: F401  (registers the schemas)
from ordertally.orders import review
from ordertally.rules import service

# The rules on `order.paid` run in the payment transition's own transaction (ADR 0034).
review.on_paid(service.evaluate_paid)


@consumer("rules.evaluate", *service.EVENT_TYPES)
async def evaluate(session: AsyncSession, envelope: Envelope) -> None:
    """Evaluate the enabled rules this event triggers; a replayed event fires nothing twice
    (a firing is unique per rule and event)."""
    await service.evaluate_event(session, envelope)


@batch_consumer("rules.evaluate")
async def evaluate_many(session: AsyncSession, envelopes: list[Envelope]) -> None:
    """The same for a batch of events (the orders and their facts read once)."""
    await service.evaluate_events(session, envelopes)
