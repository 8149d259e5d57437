"""Periodic jobs of the customers domain: profiles recomputed as their windows age."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.settings import get_settings
from ordertally.customers import service
from ordertally.jobs.scheduler import periodic


@periodic("customers_age_profiles", every_seconds=3600)
async def customers_age_profiles(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Recompute profiles whose orders, returns or flags left their windows."""
    return {
        "recomputed": await service.age_profiles(
            session, now, get_settings().customers_ageing_batch
        )
    }
