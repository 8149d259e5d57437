"""Periodic jobs of the exports domain: run queued exports, expire old files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ordertally.core.db import Database
from ordertally.exports import service
from ordertally.jobs.scheduler import periodic_outside


@periodic_outside("exports_run_queued", every_seconds=2)
async def run_queued_exports(db: Database, now: datetime) -> dict[str, Any]:
    """Run queued exports, each in its own read snapshot with short progress transactions."""
    return {"ran": await service.run_queued(db)}


@periodic_outside("exports_expire", every_seconds=3600)
async def expire_exports(db: Database, now: datetime) -> dict[str, Any]:
    """Delete files past their retention and mark their exports expired."""
    return {"expired": await service.expire(db, now)}
