"""Periodic jobs of the fulfillment domain: the allocation sweep, the carrier loop and the
stale-tracking check."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.fulfillment import allocation, carrier_loop, tracking_updates
from ordertally.jobs.scheduler import periodic, periodic_outside


@periodic("fulfillment_allocate_waiting", every_seconds=60)
async def allocate_waiting(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Paid orders still without shipments (hold resolved since, event path missed)."""
    if not get_settings().fulfillment_auto_allocate:
        return {"allocated": 0}
    return {"allocated": await allocation.allocate_waiting(session, limit=200)}


@periodic_outside("fulfillment_carrier_work", every_seconds=5)
async def carrier_work(db: Database, now: datetime) -> dict[str, Any]:
    """Waybills, tracking subscriptions and polls due with the carrier."""
    return await carrier_loop.carrier_work(db, now)


@periodic("fulfillment_flag_stale", every_seconds=300)
async def flag_stale(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Shipped parcels without tracking after the threshold become exceptions."""
    return {"flagged": await tracking_updates.flag_stale(session, now)}
