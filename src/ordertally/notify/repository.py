"""Every query of the notify domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import upsert_insert
from ordertally.notify.models import Notification

# Rows per INSERT: SQLite allows 32,766 bound parameters in one statement (15 a row here).
PLAN_CHUNK = 500


async def add_planned(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Insert planned messages (one statement per PLAN_CHUNK rows); one already planned for
    (event, target) is left alone. Returns how many were new."""
    added = 0
    for start in range(0, len(rows), PLAN_CHUNK):
        stmt = (
            upsert_insert(session, Notification.__table__)
            .values(rows[start : start + PLAN_CHUNK])
            .on_conflict_do_nothing(index_elements=["event_id", "target_key"])
            .returning(Notification.__table__.c.id)
        )
        added += len((await session.execute(stmt)).all())
    return added


async def claim_due(
    session: AsyncSession, now: datetime, limit: int, *, skip_locked: bool
) -> list[Notification]:
    """Pending rows and failed rows whose next attempt is due, oldest first; locked on
    PostgreSQL, skipping rows another sender holds (SQLite has a single writer)."""
    stmt = (
        select(Notification)
        .where(
            Notification.status.in_(("pending", "failed")),
            Notification.next_attempt_at <= now,
        )
        .order_by(Notification.next_attempt_at, Notification.id)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


async def lease(session: AsyncSession, ids: list[int], until: datetime) -> None:
    """Hide claimed rows from other senders until `until` (their sends are in flight)."""
    await session.execute(
        update(Notification).where(Notification.id.in_(ids)).values(next_attempt_at=until)
    )


async def any_due(session: AsyncSession, now: datetime) -> bool:
    """Whether any pending or failed row is due (what an idle sender polls)."""
    stmt = (
        select(Notification.id)
        .where(
            Notification.status.in_(("pending", "failed")),
            Notification.next_attempt_at <= now,
        )
        .limit(1)
    )
    return (await session.scalar(stmt)) is not None


_RECORDED = (
    "status",
    "attempts",
    "next_attempt_at",
    "sent_at",
    "provider_message_id",
    "last_error",
)
_RECORD = (
    update(Notification.__table__)  # type: ignore[arg-type]
    .where(
        Notification.__table__.c.id == bindparam("b_id"),
        # Still the attempt this sender claimed: a row another sender took after the lease ran
        # out and recorded first keeps that record.
        Notification.__table__.c.attempts == bindparam("b_claimed_attempts"),
        or_(
            Notification.__table__.c.status == "pending",
            Notification.__table__.c.status == "failed",
        ),  # not IN (...): an expanding parameter cannot be used with executemany
    )
    .values({name: bindparam(f"b_{name}") for name in _RECORDED})
)


async def record_many(session: AsyncSession, changes: list[dict[str, Any]]) -> None:
    """Write the outcomes of one round on its claimed rows in one statement (executemany);
    each change carries `id`, `claimed_attempts` and every recorded column."""
    if not changes:
        return
    params = [
        {"b_id": c["id"], "b_claimed_attempts": c["claimed_attempts"]}
        | {f"b_{name}": c[name] for name in _RECORDED}
        for c in changes
    ]
    await session.execute(_RECORD, params)


async def get(session: AsyncSession, notification_id: int) -> Notification | None:
    """One row by id."""
    return await session.get(Notification, notification_id, populate_existing=True)


async def by_event(session: AsyncSession, event_id: str) -> Notification | None:
    """The (first) row of an event."""
    stmt = select(Notification).where(Notification.event_id == event_id).order_by(Notification.id)
    return (await session.scalars(stmt.limit(1))).first()


async def requeue(session: AsyncSession, notification_id: int, now: datetime) -> bool:
    """Put a dead row back to pending with its attempts reset."""
    result = await session.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.status == "dead")
        .values(status="pending", attempts=0, next_attempt_at=now, last_error=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def search(
    session: AsyncSession,
    *,
    order_no: str | None,
    status: str | None,
    limit: int,
    before_id: int | None,
) -> list[Notification]:
    """The send log, newest first, filtered."""
    stmt = select(Notification).order_by(Notification.id.desc()).limit(limit)
    if order_no is not None:
        stmt = stmt.where(Notification.order_no == order_no)
    if status is not None:
        stmt = stmt.where(Notification.status == status)
    if before_id is not None:
        stmt = stmt.where(Notification.id < before_id)
    return list((await session.scalars(stmt)).all())


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    """Rows per status."""
    rows = await session.execute(
        select(Notification.status, func.count()).group_by(Notification.status)
    )
    return {status: int(n) for status, n in rows.all()}
