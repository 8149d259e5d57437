"""Periodic jobs of idempotency keys: the purge."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ordertally.core.db import Database
from ordertally.idempotency import service
from ordertally.jobs.scheduler import periodic_outside


@periodic_outside("purge_idempotency_keys", every_seconds=3600)
async def purge_idempotency_keys(db: Database, now: datetime) -> dict[str, Any]:
    """Forget idempotency keys older than their retention, in short transactions."""
    return {"purged": await service.purge_expired(db, now)}
