"""Periodic jobs of the orders domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.jobs.scheduler import periodic, periodic_outside
from ordertally.orders import closing, review, service


@periodic_outside("close_unpaid_orders", every_seconds=60)
async def close_unpaid_orders(db: Database, now: datetime) -> dict[str, Any]:
    """Close orders still pending payment after the payment timeout (the pre-close checks ask
    other systems with no transaction open; each close is its own transaction)."""
    return {"closed": await closing.close_unpaid(db, now)}


@periodic("orders_review_recheck", every_seconds=60)
async def orders_review_recheck(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Pass the orders held in review only until time passed (paid too recently, window)."""
    return {"passed": await review.recheck(session)}


@periodic_outside("purge_order_fingerprints", every_seconds=600)
async def purge_order_fingerprints(db: Database, now: datetime) -> dict[str, Any]:
    """Forget the duplicate fingerprints of orders older than the duplicate window, in short
    transactions (ADR 0056)."""
    return {"purged": await service.purge_fingerprints(db, now, get_settings())}
