"""Periodic jobs of idempotency keys: the purge."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.idempotency import service
from ordertally.jobs.scheduler import periodic


@periodic("purge_idempotency_keys", every_seconds=3600)
async def purge_idempotency_keys(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Forget idempotency keys older than their retention."""
    return {"purged": await service.purge_expired(session, now)}
