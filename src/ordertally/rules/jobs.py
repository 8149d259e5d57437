"""Periodic jobs of the rules domain: the tick that evaluates scheduled rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.jobs.scheduler import periodic
from ordertally.rules import service


@periodic("rules_schedule_tick", every_seconds=60)
async def rules_schedule_tick(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Evaluate the scheduled rules (stock, channels) over their subjects."""
    return {"fired": await service.run_schedule(session, now)}
