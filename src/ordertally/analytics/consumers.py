"""Consumers that keep analytics tables up to date from order and shipment events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.analytics import service
from ordertally.events.registry import Envelope, batch_consumer, consumer


@consumer("analytics.order_daily_tally", "OrderCreated")
async def tally_created_order(session: AsyncSession, event: Envelope) -> None:
    """Count the order on its merchant-local business day."""
    await service.tally_order(session, event)


@consumer("analytics.order_timeline", *service.TIMELINE_EVENTS)
async def fold_into_timeline(session: AsyncSession, event: Envelope) -> None:
    """Record when the order reached a stage, where it shipped from and with whom."""
    await service.apply_event(session, event)


@batch_consumer("analytics.order_timeline")
async def fold_batch_into_timeline(session: AsyncSession, events: list[Envelope]) -> None:
    """The same fold for a dispatch batch, a statement per kind of change."""
    await service.apply_events(session, events)
