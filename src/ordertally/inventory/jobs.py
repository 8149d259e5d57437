"""Periodic jobs of the inventory domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.inventory import service
from ordertally.jobs.scheduler import periodic


@periodic("sweep_expired_reservations", every_seconds=60)
async def sweep_expired_reservations(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Free held reservations past their expiry, even if the order's close was lost."""
    return {"released": await service.sweep_expired(session, now)}
