"""Every query on the outbox, dedupe and dead-letter tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import dialect_of, insert_rows, table_of, upsert_insert
from ordertally.events.models import DeadLetter, OutboxEvent, ProcessedEvent


class Claimed(Protocol):
    """What the dispatcher reads of a claimed event (an outbox row or its model)."""

    id: int
    event_id: str
    event_type: str
    event_version: int
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]
    occurred_at: datetime
    attempts: int


async def add_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert outbox rows."""
    await insert_rows(session, table_of(OutboxEvent), rows)


async def claim_due(
    session: AsyncSession,
    now: datetime,
    limit: int,
    *,
    skip_locked: bool,
    leave: frozenset[str] | set[str] = frozenset(),
) -> list[OutboxEvent]:
    """Pending events whose time has come, oldest first; locked on PostgreSQL. Event types in
    `leave` are not claimed (they wait for a later batch)."""
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.status == "pending", OutboxEvent.available_at <= now)
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    if leave:
        stmt = stmt.where(OutboxEvent.event_type.not_in(sorted(leave)))
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


async def claim_batch(
    session: AsyncSession,
    now: datetime,
    limit: int,
    *,
    skip_locked: bool,
    leave: frozenset[str] | set[str] = frozenset(),
) -> tuple[list[Claimed], dict[str, set[str]]]:
    """`claim_due` and, for each claimed event, the consumers that already applied it
    (`processed_for`). On PostgreSQL in one statement (the rows as Core rows, no ORM
    objects): a dispatch batch's first round trip."""
    if dialect_of(session) != "postgresql":
        events = await claim_due(session, now, limit, skip_locked=skip_locked, leave=leave)
        return list(events), await processed_for(session, [e.event_id for e in events])
    applied = (
        select(func.array_agg(ProcessedEvent.consumer))
        .where(ProcessedEvent.event_id == OutboxEvent.event_id)
        .scalar_subquery()
    )
    o = OutboxEvent
    stmt = (
        select(
            o.id,
            o.event_id,
            o.event_type,
            o.event_version,
            o.aggregate_type,
            o.aggregate_id,
            o.payload,
            o.occurred_at,
            o.attempts,
            applied.label("applied"),
        )
        .where(o.status == "pending", o.available_at <= now)
        .order_by(o.id)
        .limit(limit)
    )
    if leave:
        stmt = stmt.where(o.event_type.not_in(sorted(leave)))
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True, of=o)
    rows = (await session.execute(stmt)).all()
    already = {r.event_id: set(r.applied) for r in rows if r.applied}
    return cast(list[Claimed], rows), already


_FINISH_BATCH = text(
    """
    WITH finished AS (
        UPDATE outbox SET status = 'done', done_at = CAST(:at AS timestamptz)
        WHERE id = ANY(CAST(:ids AS bigint[]))
        RETURNING 1
    )
    INSERT INTO processed_event (consumer, event_id, processed_at)
    SELECT c, e, CAST(:at AS timestamptz)
    FROM unnest(CAST(:consumers AS text[]), CAST(:event_ids AS text[])) AS u(c, e)
    ON CONFLICT DO NOTHING
    """
)


async def finish_batch(
    session: AsyncSession, processed: list[dict[str, Any]], done: list[int], at: datetime
) -> None:
    """`mark_processed_many` and `finish_many(done, "done")`; on PostgreSQL in one statement
    from arrays (one prepared statement whatever the batch's size)."""
    if dialect_of(session) != "postgresql":
        await mark_processed_many(session, processed)
        await finish_many(session, done, "done", at)
        return
    if not processed and not done:
        return
    await session.execute(
        _FINISH_BATCH,
        {
            "at": at,
            "ids": done,
            "consumers": [r["consumer"] for r in processed],
            "event_ids": [r["event_id"] for r in processed],
        },
    )


async def processed_for(session: AsyncSession, event_ids: list[str]) -> dict[str, set[str]]:
    """For a batch of events, the consumers that already applied each (one query)."""
    found: dict[str, set[str]] = {}
    if not event_ids:
        return found
    rows = await session.execute(
        select(ProcessedEvent.event_id, ProcessedEvent.consumer).where(
            ProcessedEvent.event_id.in_(event_ids)
        )
    )
    for event_id, consumer in rows.all():
        found.setdefault(event_id, set()).add(consumer)
    return found


async def mark_processed_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Record many (consumer, event_id, processed_at) rows at once; existing ones are kept."""
    if rows:
        await session.execute(upsert_insert(session, ProcessedEvent).on_conflict_do_nothing(), rows)


async def finish_many(
    session: AsyncSession, event_pks: list[int], status: str, at: datetime
) -> None:
    """Mark many events done (or dead) in one statement."""
    if event_pks:
        await session.execute(
            update(table_of(OutboxEvent))
            .where(OutboxEvent.id.in_(event_pks))
            .values(status=status, done_at=at)
        )


async def finish(session: AsyncSession, event_pk: int, status: str, at: datetime) -> None:
    """Mark an event done (or dead)."""
    await session.execute(
        update(table_of(OutboxEvent))
        .where(OutboxEvent.id == event_pk)
        .values(status=status, done_at=at)
    )


async def schedule_retry(
    session: AsyncSession, event_pk: int, attempts: int, available_at: datetime, error: str
) -> None:
    """Push an event back with its attempt count and last error."""
    await session.execute(
        update(table_of(OutboxEvent))
        .where(OutboxEvent.id == event_pk)
        .values(attempts=attempts, available_at=available_at, last_error=error[:4000])
    )


async def add_dead_letter(session: AsyncSession, **values: Any) -> None:
    """Record a consumer's give-up."""
    await session.execute(insert(DeadLetter).values(**values))


async def backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Pending event count and the oldest pending occurred_at."""
    row = (
        await session.execute(
            select(func.count(), func.min(OutboxEvent.occurred_at)).where(
                OutboxEvent.status == "pending"
            )
        )
    ).one()
    oldest = row[1]
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest)
    return int(row[0]), oldest


async def count_dead_letters(session: AsyncSession) -> int:
    """How many dead letters exist."""
    return int(await session.scalar(select(func.count()).select_from(DeadLetter)) or 0)


async def requeue_dead(session: AsyncSession, now: datetime, event_id: str | None) -> list[str]:
    """Put dead events (all, or one) back to pending with fresh attempts; returns their ids."""
    stmt = (
        update(table_of(OutboxEvent))
        .where(OutboxEvent.status == "dead")
        .values(status="pending", attempts=0, available_at=now, done_at=None)
        .returning(OutboxEvent.event_id)
    )
    if event_id is not None:
        stmt = stmt.where(OutboxEvent.event_id == event_id)
    ids = [str(i) for i in (await session.execute(stmt)).scalars().all()]
    if ids:
        await session.execute(delete(DeadLetter).where(DeadLetter.event_id.in_(ids)))
    return ids


async def events_after(
    session: AsyncSession, event_types: list[str], after_id: int, limit: int
) -> list[OutboxEvent]:
    """Events of some types after an outbox id, oldest first (replays rebuild read models)."""
    rows = await session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.id > after_id, OutboxEvent.event_type.in_(event_types))
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    return list(rows.all())


async def backlog_of(session: AsyncSession, event_types: list[str]) -> tuple[int, datetime | None]:
    """Pending events of some types: their count and the oldest one's occurred_at."""
    row = (
        await session.execute(
            select(func.count(), func.min(OutboxEvent.occurred_at)).where(
                OutboxEvent.status == "pending", OutboxEvent.event_type.in_(list(event_types))
            )
        )
    ).one()
    oldest = row[1]
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest)
    return int(row[0]), oldest


# --- retention --------------------------------------------------------------------------------


async def purge_delivered(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` delivered events (done before `before`), oldest first. The range
    walks (status, available_at): an event is available before it is done."""
    oldest = (
        select(OutboxEvent.id)
        .where(
            OutboxEvent.status == "done",
            OutboxEvent.available_at < before,
            OutboxEvent.done_at < before,
        )
        .order_by(OutboxEvent.available_at)
        .limit(limit)
    )
    result = await session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(oldest)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_processed(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` dedupe rows written before `before`, except those of an event that
    can still be delivered again (pending, or dead and replayable): for those, the row is what
    keeps a consumer from applying the event twice."""
    live = select(OutboxEvent.id).where(
        OutboxEvent.event_id == ProcessedEvent.event_id, OutboxEvent.status != "done"
    )
    oldest = (
        select(ProcessedEvent.consumer, ProcessedEvent.event_id)
        .where(ProcessedEvent.processed_at < before, ~live.exists())
        .order_by(ProcessedEvent.processed_at)
        .limit(limit)
    )
    rows = (await session.execute(oldest)).all()
    if not rows:
        return 0
    by_consumer: dict[str, list[str]] = {}
    for consumer, event_id in rows:
        by_consumer.setdefault(consumer, []).append(event_id)
    for consumer, event_ids in sorted(by_consumer.items()):
        await session.execute(
            delete(ProcessedEvent).where(
                ProcessedEvent.consumer == consumer, ProcessedEvent.event_id.in_(event_ids)
            )
        )
    return len(rows)
