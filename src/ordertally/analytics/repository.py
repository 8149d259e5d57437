"""Every query on the daily tally."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.analytics.models import OrderDailyTally
from ordertally.core.db import upsert_insert


async def add_to_tally(
    session: AsyncSession, day_date: str, channel: str, currency: str, total_minor: int
) -> None:
    """Add one order to its day's tally (upsert)."""
    stmt = upsert_insert(session, OrderDailyTally).values(
        day_date=day_date,
        channel=channel,
        currency=currency,
        orders_count=1,
        total_minor=total_minor,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["day_date", "channel", "currency"],
        set_={
            "orders_count": OrderDailyTally.orders_count + 1,
            "total_minor": OrderDailyTally.total_minor + total_minor,
        },
    )
    await session.execute(stmt)


async def tallies(session: AsyncSession) -> list[OrderDailyTally]:
    """Every tally row."""
    rows = await session.scalars(
        select(OrderDailyTally).order_by(
            OrderDailyTally.day_date, OrderDailyTally.channel, OrderDailyTally.currency
        )
    )
    return list(rows.all())
