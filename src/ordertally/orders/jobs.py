"""Periodic jobs of the orders domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Database
from ordertally.jobs.scheduler import periodic, periodic_outside
from ordertally.orders import closing, review


@periodic_outside("close_unpaid_orders", every_seconds=60)
async def close_unpaid_orders(db: Database, now: datetime) -> dict[str, Any]:
    """Close orders still pending payment after the payment timeout (the pre-close checks ask
    other systems with no transaction open; each close is its own transaction)."""
    return {"closed": await closing.close_unpaid(db, now)}


@periodic("orders_review_recheck", every_seconds=60)
async def orders_review_recheck(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Pass the orders held in review only until time passed (paid too recently, window)."""
    return {"passed": await review.recheck(session)}
