"""Operator actions on the event machinery."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.events import repository


async def replay_dead(session: AsyncSession, event_id: str | None = None) -> list[str]:
    """Send dead-lettered events through their consumers again (consumers that already applied
    them skip them, thanks to processed_event); returns the ids requeued."""
    return await repository.requeue_dead(session, clock.now(), event_id)


async def outbox_backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Events not yet delivered, and the oldest one's time."""
    return await repository.backlog(session)


async def backlog_of(session: AsyncSession, event_types: list[str]) -> tuple[int, datetime | None]:
    """Events of some types not yet delivered, and the oldest one's time (a consumer's lag)."""
    return await repository.backlog_of(session, event_types)
