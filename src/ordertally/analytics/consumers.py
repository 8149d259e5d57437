"""Consumers that keep analytics tables up to date from order events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.analytics import repository
from ordertally.core import clock
from ordertally.core.settings import get_settings
from ordertally.events.registry import Envelope, consumer
from ordertally.orders.events import OrderCreated


@consumer("analytics.order_daily_tally", "OrderCreated")
async def tally_created_order(session: AsyncSession, event: Envelope) -> None:
    """Count the order on its merchant-local business day."""
    created = OrderCreated.model_validate(event.payload)
    day = clock.to_local(created.created_at, get_settings().timezone).date().isoformat()
    await repository.add_to_tally(
        session, day, created.channel, created.currency, created.total_minor
    )
