"""Periodic jobs of the notify domain: the sender."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.settings import get_settings
from ordertally.jobs.scheduler import periodic
from ordertally.notify import service


@periodic("notify_send_due", every_seconds=5)
async def notify_send_due(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Send the messages whose attempt is due, retry or give up on failures."""
    return asdict(await service.send_batch(session, now, get_settings()))
