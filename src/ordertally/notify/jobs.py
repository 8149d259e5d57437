"""Periodic jobs of the notify domain: the tick that keeps a sender loop running."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.jobs.scheduler import on_worker_stop, periodic_outside
from ordertally.notify import sender


@periodic_outside("notify_send_due", every_seconds=5)
async def notify_send_due(db: Database, now: datetime) -> dict[str, Any]:
    """Start this worker's sender loop unless it runs (notify/sender.py): it sends what is due,
    retries or gives up on failures, and holds no transaction while the channels answer."""
    return {"started": sender.ensure_running(db, get_settings())}


# A stopping worker stops its sender loop (its round in flight is leased, not lost).
on_worker_stop(sender.stop)
