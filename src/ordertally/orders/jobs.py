"""Periodic jobs of the orders domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ordertally.core.db import Database
from ordertally.jobs.scheduler import periodic_outside
from ordertally.orders import closing


@periodic_outside("close_unpaid_orders", every_seconds=60)
async def close_unpaid_orders(db: Database, now: datetime) -> dict[str, Any]:
    """Close orders still pending payment after the payment timeout (the pre-close checks ask
    other systems with no transaction open; each close is its own transaction)."""
    return {"closed": await closing.close_unpaid(db, now)}
