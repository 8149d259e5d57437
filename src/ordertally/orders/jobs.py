"""Periodic jobs of the orders domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.jobs.scheduler import periodic
from ordertally.orders import service


@periodic("close_unpaid_orders", every_seconds=60)
async def close_unpaid_orders(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Close orders still pending payment after the payment timeout."""
    return {"closed": await service.close_unpaid(session, now)}
