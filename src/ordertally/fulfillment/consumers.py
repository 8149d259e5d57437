"""What the worker loads for this domain: its event schemas, consumers and periodic jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

import ordertally.fulfillment.events  # noqa: F401
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.registry import Envelope, consumer
from ordertally.fulfillment import service
from ordertally.jobs.scheduler import periodic, periodic_outside


@consumer("fulfillment.allocate", "OrderPaid", "OrderReopenedPaid")
async def allocate_paid_order(session: AsyncSession, envelope: Envelope) -> None:
    """A paid order gets its shipments (one per warehouse of its reservations) and moves to
    allocated; an order on hold waits for the sweep below."""
    if get_settings().fulfillment_auto_allocate:
        await service.allocate(session, int(envelope.payload["order_id"]))


@periodic("fulfillment_allocate_waiting", every_seconds=60)
async def allocate_waiting(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Paid orders still without shipments (hold resolved since, event path missed)."""
    if not get_settings().fulfillment_auto_allocate:
        return {"allocated": 0}
    return {"allocated": await service.allocate_waiting(session, limit=200)}


@periodic_outside("fulfillment_carrier_work", every_seconds=5)
async def carrier_work(db: Database, now: datetime) -> dict[str, Any]:
    """Waybills, tracking subscriptions and polls due with the carrier."""
    return await service.carrier_work(db, now)


@periodic("fulfillment_flag_stale", every_seconds=300)
async def flag_stale(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Shipped parcels without tracking after the threshold become exceptions."""
    return {"flagged": await service.flag_stale(session, now)}
