"""Operator actions on the event machinery."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.events import repository
from ordertally.events.registry import Envelope


async def replay_dead(session: AsyncSession, event_id: str | None = None) -> list[str]:
    """Send dead-lettered events through their consumers again (consumers that already applied
    them skip them, thanks to processed_event); returns the ids requeued."""
    return await repository.requeue_dead(session, clock.now(), event_id)


async def outbox_backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Events not yet delivered, and the oldest one's time."""
    return await repository.backlog(session)


async def replay_log(
    session: AsyncSession, event_types: list[str], after_id: int, limit: int
) -> list[tuple[int, Envelope]]:
    """The event log (the outbox keeps delivered events for `outbox_retention_days`) from after
    an id: (id, envelope) pairs, oldest first, for rebuilding a read model."""
    rows = await repository.events_after(session, event_types, after_id, limit)
    return [
        (
            r.id,
            Envelope(
                id=r.event_id,
                type=r.event_type,
                version=r.event_version,
                occurred_at=r.occurred_at,
                aggregate_type=r.aggregate_type,
                aggregate_id=r.aggregate_id,
                payload=r.payload,
            ),
        )
        for r in rows
    ]


async def backlog_of(session: AsyncSession, event_types: list[str]) -> tuple[int, datetime | None]:
    """Events of some types not yet delivered, and the oldest one's time (a consumer's lag)."""
    return await repository.backlog_of(session, event_types)


async def purge_delivered(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` events delivered before `before` (the event log's retention)."""
    return await repository.purge_delivered(session, before, limit)


async def purge_dedupe(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` consumers' dedupe rows older than `before`, except for events that
    can still be delivered again."""
    return await repository.purge_processed(session, before, limit)
