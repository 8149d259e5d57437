"""Periodic jobs of auth: forgetting browser sessions that can no longer be used."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth import users
from ordertally.jobs.scheduler import periodic


@periodic("purge_user_sessions", every_seconds=3600)
async def purge_user_sessions(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Forget sessions past their absolute expiry or idle limit."""
    return {"purged": await users.purge_sessions(session, now)}
