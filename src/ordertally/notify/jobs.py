"""Periodic jobs of the notify domain: the sender."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.jobs.scheduler import periodic_outside
from ordertally.notify import service


@periodic_outside("notify_send_due", every_seconds=5)
async def notify_send_due(db: Database, now: datetime) -> dict[str, Any]:
    """Send the messages whose attempt is due, retry or give up on failures (no transaction is
    held while the channels answer)."""
    return asdict(await service.send_due(db, now, get_settings()))
