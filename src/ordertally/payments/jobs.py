"""Periodic jobs of the payments domain: compensation queries, nonce purge, inbox gauges."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.jobs.scheduler import periodic, periodic_outside
from ordertally.payments import compensation, inbox, service
from ordertally.payments.metrics import INBOX_BACKLOG, INBOX_OLDEST_AGE


@periodic_outside("payments_query_due", every_seconds=60)
async def payments_query_due(db: Database, now: datetime) -> dict[str, Any]:
    """Ask the providers about attempts without a result (compensation for lost callbacks),
    holding no transaction while they answer."""
    return await compensation.query_due(db, now, get_settings().payment_query_batch)


@periodic("payments_purge_nonces", every_seconds=600)
async def payments_purge_nonces(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Forget notification nonces past the replay window."""
    return {"purged": await service.purge_nonces(session, now)}


@periodic("payments_inbox_gauges", every_seconds=60)
async def payments_inbox_gauges(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Publish the inbox backlog and its oldest age as gauges."""
    backlog, oldest = await service.inbox_backlog(session)
    age = max((clock.now() - clock.as_utc(oldest)).total_seconds(), 0.0) if oldest else 0.0
    INBOX_BACKLOG.set(backlog)
    INBOX_OLDEST_AGE.set(age)
    return {"backlog": backlog, "oldest_age_seconds": round(age, 3)}


@periodic("payments_inbox_purge", every_seconds=3600)
async def payments_inbox_purge(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Empty the raw bodies of notifications finished longer ago than the retention period."""
    return {"purged": await inbox.purge_bodies(session, now)}
